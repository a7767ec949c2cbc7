"""Worked examples for the model's prompt: a sentence and its plan, at least one
for every syscall of the vocabulary. The few most like the user's sentence are
shown to the model (few-shot). None of them is in the evaluation set
(tests/shell_eval.jsonl); a test keeps it so."""

from __future__ import annotations

import logging
import re
from collections import Counter

import numpy as np

from llmos.devices.embeddings import Embedder, WordLlamaEmbedder
from llmos.errors import Unavailable
from llmos.shell.plan import Step

Example = tuple[str, tuple[Step, ...]]
S = Step
EXAMPLES: tuple[Example, ...] = (
    ("show me everything that is running", (S("proc.list"),)),
    ("are any agents alive right now", (S("proc.list"),)),
    ("give me a list of all the agents", (S("proc.list"),)),
    ("give me the details of agent 14", (S("proc.get", {"pid": 14}),)),
    ("is process 3 still alive", (S("proc.get", {"pid": 3}),)),
    ("how is agent 9 doing", (S("proc.get", {"pid": 9}),)),
    ("shut down agent 21 immediately", (S("proc.kill", {"pid": 21}),)),
    ("force process 40 to quit", (S("proc.kill", {"pid": 40}),)),
    ("hold agent 5 for a while", (S("proc.signal", {"pid": 5, "signal": "suspend"}),)),
    ("put agent 2 on hold", (S("proc.signal", {"pid": 2, "signal": "suspend"}),)),
    ("let agent 5 carry on", (S("proc.signal", {"pid": 5, "signal": "resume"}),)),
    ("agent 2 may continue now", (S("proc.signal", {"pid": 2, "signal": "resume"}),)),
    ("launch an agent named writer", (S("proc.spawn", {"name": "writer"}),)),
    ("new process for crawling, call it crawler", (S("proc.spawn", {"name": "crawler"}),)),
    ("what has agent 6 been saying", (S("conv.history", {"pid": 6}),)),
    ("what did the program of agent 4 print", (S("proc.logs", {"pid": 4}),)),
    ("have I told you anything about my sister", (S("mem.search", {"query": "sister"}),)),
    ("do you recall anything about my car", (S("mem.search", {"query": "car"}),)),
    ("look for notes on the budget meeting", (S("mem.search", {"query": "budget meeting"}),)),
    ("keep in mind that I am allergic to nuts", (S("mem.add", {"text": "I am allergic to nuts"}),)),
    ("jot down: rent is due on the first", (S("mem.add", {"text": "rent is due on the first"}),)),
    ("everything you have memorised about me", (S("mem.list"),)),
    ("bring up memory number 12", (S("mem.get", {"id": 12}),)),
    ("erase memory 30 for good", (S("mem.delete", {"id": 30}),)),
    ("what is stored in my folder docs/", (S("fs.list", {"prefix": "docs/"}),)),
    ("what is inside the projects directory", (S("fs.list", {"prefix": "projects"}),)),
    ("what have I saved so far", (S("fs.list"),)),
    ("print out plan.txt for me", (S("fs.read", {"path": "plan.txt"}),)),
    ("let me see what config.yaml says", (S("fs.read", {"path": "config.yaml"}),)),
    ("how big is data/log.csv", (S("fs.stat", {"path": "data/log.csv"}),)),
    (
        "write hello world into greeting.txt",
        (S("fs.write", {"path": "greeting.txt", "content": "hello world"}),),
    ),
    ("throw away drafts/old.md", (S("fs.delete", {"path": "drafts/old.md"}),)),
    ("trash budget.xlsx", (S("fs.delete", {"path": "budget.xlsx"}),)),
    ("older copies of report.md", (S("fs.versions", {"path": "report.md"}),)),
    (
        "bring report.md back to its second version",
        (S("fs.rollback", {"path": "report.md", "version": 2}),),
    ),
    ("which of my documents talk about taxes", (S("fs.search", {"query": "taxes"}),)),
    ("where did I write about the product launch", (S("fs.search", {"query": "product launch"}),)),
    ("how is the kernel doing", (S("sys.info"),)),
    ("is the system healthy and how busy is it", (S("sys.info"),)),
    ("how many engines and slots are there", (S("sys.devices"),)),
    ("what hardware does the model run on", (S("sys.devices"),)),
    ("which language models can I use", (S("sys.models"),)),
    ("what model is loaded", (S("sys.models"),)),
    ("how are requests being scheduled", (S("sched.get"),)),
    ("what policy does the scheduler follow", (S("sched.get"),)),
    ("schedule by priority from now on", (S("sched.set", {"policy": "priority"}),)),
    ("I want first in first out scheduling", (S("sched.set", {"policy": "fifo"}),)),
    ("make the scheduler share tokens fairly", (S("sched.set", {"policy": "fair"}),)),
    ("what can agents call as tools", (S("tool.list"),)),
    ("which tools are installed", (S("tool.list"),)),
    (
        "add 17 and 25",
        (S("tool.call", {"name": "calculator", "arguments": {"expression": "17+25"}}),),
    ),
    (
        "divide 100 by 4",
        (S("tool.call", {"name": "calculator", "arguments": {"expression": "100/4"}}),),
    ),
    (
        "what's the clock say in London",
        (S("tool.call", {"name": "time", "arguments": {"timezone": "Europe/London"}}),),
    ),
    ("what is the date today", (S("tool.call", {"name": "time", "arguments": {}}),)),
    ("anything queued in the background", (S("job.list"),)),
    ("how is my batch work getting on", (S("job.list"),)),
    ("drop the background job job-7f3a", (S("job.cancel", {"id": "job-7f3a"}),)),
    ("how is job job-11aa going", (S("job.get", {"id": "job-11aa"}),)),
    ("which account am I using", (S("auth.whoami"),)),
    ("who has an account here", (S("user.list"),)),
    ("show my api keys", (S("token.list"),)),
    ("invalidate key tok-42", (S("token.revoke", {"id": "tok-42"}),)),
    ("what have I shared with others", (S("share.list"),)),
    ("stop sharing number 3", (S("share.rm", {"id": 3}),)),
    ("delete the account of bob", (S("user.rm", {"name": "bob"}),)),
    ("stop agent 2 and then show what is left", (S("proc.kill", {"pid": 2}), S("proc.list"))),
)


def _words(text: str) -> Counter[str]:
    """Content-ish words (3+ letters, a plural's s dropped): the fallback's measure."""
    return Counter(w.rstrip("s") for w in re.findall(r"[a-z0-9]{3,}", text.lower()))


class ExampleIndex:
    """Finds the examples most like a sentence: by meaning (static word embeddings,
    WordLlama, offline and fast) where the embedder loads, else by shared words."""

    def __init__(self, embedder: Embedder | None = None) -> None:
        self._embedder = embedder
        self._vectors: np.ndarray | None = None

    def _embed(self, texts: list[str]) -> np.ndarray | None:
        if self._embedder is None:
            self._embedder = _load_embedder()
            if self._embedder is None:
                return None
        return self._embedder.embed(texts)

    def _scores(self, sentence: str) -> list[float]:
        if self._vectors is None:
            self._vectors = self._embed([e[0] for e in EXAMPLES])
        query = None if self._vectors is None else self._embed([sentence])
        if self._vectors is None or query is None:
            words = _words(sentence)
            return [float(sum((words & _words(e[0])).values())) for e in EXAMPLES]
        return [float(x) for x in self._vectors @ query[0]]

    def nearest(self, sentence: str, names: set[str], k: int) -> list[Example]:
        """The `k` examples most like `sentence` among those whose syscalls are all in
        `names`, least alike first (so the most alike ends nearest the question)."""
        scores = self._scores(sentence)
        usable = [i for i, e in enumerate(EXAMPLES) if all(s.syscall in names for s in e[1])]
        best = sorted(usable, key=lambda i: scores[i], reverse=True)[:k]
        return [EXAMPLES[i] for i in reversed(best)]


def _load_embedder() -> Embedder | None:
    """WordLlama, or None if it is not installed. Importing it calls
    `logging.basicConfig(level=INFO)`, which would make every later library log
    line (each HTTP request the SDK sends) print on the user's terminal: the root
    logger is put back as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        return WordLlamaEmbedder()
    except Unavailable:
        return None
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
