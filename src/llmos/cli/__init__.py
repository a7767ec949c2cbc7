"""The `llmos` command line: `up` starts a kernel; the rest talk to one via the SDK."""
