"""The smallest llmos agent: it learns who it is, asks the model one question, prints.

    llmos run examples/hello_agent.py -f -- Ada

The kernel starts it with LLMOS_URL and LLMOS_TOKEN (a token for its own process) in
its environment, so `Client()` needs no arguments and every token it spends is
accounted to its process (`llmos ps`)."""

from __future__ import annotations

import os
import sys

from llmos.sdk import Client


def main() -> int:
    name = " ".join(sys.argv[1:]) or "world"
    with Client() as llm:
        me = llm.process(int(os.environ["LLMOS_PID"]))
        print(f"hello, {name}: I am process {me['pid']} ({me['name']})")
        reply = llm.chat(
            f"Say hello to {name} in one short sentence.", max_tokens=32, temperature=0
        )
        print(reply.text.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
