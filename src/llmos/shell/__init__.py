"""The natural-language shell: a sentence becomes a plan of syscalls (the
deterministic parser for common commands, the model for the rest), which is
checked, shown, confirmed when irreversible, and run through the SDK."""
