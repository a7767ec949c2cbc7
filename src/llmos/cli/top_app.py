"""`llmos top`'s live screen: a textual App over the SDK.

Every `interval` seconds a thread worker asks the kernel for `sys.top` and posts the
answer (or the error) back to the UI as a message, so the UI never waits on the
network. Kill and renice run in thread workers the same way. The one `Client` is
used under a lock: one request at a time, from whichever worker holds it.

If the kernel cannot be reached or refuses the token, the status line says so, the
last data stays on screen, and the next tick tries again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Static

from llmos.cli import top_view as view
from llmos.params import MAX_PRIORITY
from llmos.sdk import ApiError, Client, KernelUnreachable

Row = dict[str, Any]


class Fetched(Message):
    def __init__(self, data: Row) -> None:
        super().__init__()
        self.data = data


class FetchFailed(Message):
    def __init__(self, error: ApiError) -> None:
        super().__init__()
        self.error = error


class Outcome(Message):
    """What a kill or renice came to, for the message line."""

    def __init__(self, text: str, error: bool = False) -> None:
        super().__init__()
        self.text = text
        self.error = error


class Confirm(ModalScreen[bool]):
    """A y/n question; dismissed with True for `y`, False for `n` or escape."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "yes"),
        Binding("n,escape", "answer(False)", "no"),
    ]
    DEFAULT_CSS = """
    Confirm { align: center middle; }
    Confirm > Static { width: auto; padding: 1 3; border: thick $error; background: $panel; }
    """

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        yield Static(Text.assemble(self.question, "  ", ("y", "bold"), "/", ("n", "bold")))

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class TopApp(App[None]):
    """Processes, devices, queues and alerts of one kernel, refreshed every `interval`."""

    TITLE = "llmos top"
    CSS = """
    #header { height: 1; background: $primary-background; padding: 0 1; }
    #procs { height: 1fr; border: round $primary; }
    #lower { height: auto; max-height: 14; }
    #devices { width: 3fr; height: auto; max-height: 12; border: round $secondary; }
    #side { width: 2fr; height: auto; }
    #queues { height: auto; border: round $secondary; padding: 0 1; }
    #alerts { height: auto; max-height: 9; border: round $warning; padding: 0 1; }
    #message { height: 1; padding: 0 1; }
    #status { height: 1; padding: 0 1; color: $text-muted; }
    #status.down { color: $error; text-style: bold; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "sort", "sort"),
        Binding("S", "reverse", "reverse"),
        Binding("k", "kill", "kill"),
        Binding("plus", "renice(1)", "prio+1"),
        Binding("minus", "renice(-1)", "prio-1"),
        Binding("a", "toggle_all", "all/live"),
        Binding("q", "quit", "quit"),
    ]

    def __init__(self, client: Client, interval: float = 1.0) -> None:
        super().__init__()
        self.client = client
        self.interval = interval
        self.data: Row | None = None  # the last sys.top answer
        self.fetched_at: float | None = None
        self.sort_column = 0
        self.reverse = False
        self.show_all = False
        self.order: list[Row] = []  # the processes as listed, top to bottom
        self._lock = threading.Lock()  # guards self.client: one request at a time
        self._fetching = False  # a fetch is in flight (main thread only)
        # The main view's widgets, held here: App.query_one searches only the screen on
        # top, which is the y/n question while one is asked.
        self.header_bar = Static("connecting…", id="header", markup=False)
        self.proc_table: DataTable[Text] = DataTable(
            id="procs", cursor_type="row", zebra_stripes=True
        )
        self.device_table: DataTable[Text] = DataTable(id="devices", cursor_type="none")
        self.queue_box = Static(id="queues", markup=False)
        self.alert_box = Static("no alerts", id="alerts")
        self.message_line = Static(id="message", markup=False)
        self.status_line = Static(f"connecting to {client.url}…", id="status", markup=False)

    # -- layout --------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield self.header_bar
        yield self.proc_table
        with Horizontal(id="lower"):
            yield self.device_table
            with Vertical(id="side"):
                yield self.queue_box
                yield self.alert_box
        yield self.message_line
        yield self.status_line
        yield Footer()

    def on_mount(self) -> None:
        for col in view.PROC_COLUMNS:
            self.proc_table.add_column(col.title, key=col.key)
        self.device_table.can_focus = False
        self.device_table.add_columns(*view.DEVICE_COLUMNS)
        self.device_table.border_title = "devices"
        self.queue_box.border_title = "queues"
        self.alert_box.border_title = "alerts"
        self._retitle()
        self.proc_table.focus()
        self.refresh_now()
        self.set_interval(self.interval, self.refresh_now)

    # -- polling -------------------------------------------------------------------
    def refresh_now(self) -> None:
        """Ask for fresh data unless a request for it is still out."""
        if not self._fetching:
            self._fetching = True
            self._fetch()

    @work(thread=True, group="fetch")
    def _fetch(self) -> None:
        try:
            with self._lock:
                data = self.client.top()
        except ApiError as exc:
            self.post_message(FetchFailed(exc))
        else:
            self.post_message(Fetched(data))

    def on_fetched(self, message: Fetched) -> None:
        self._fetching = False
        if not self.status_line.is_attached:  # an answer that arrived as the app closed
            return
        self.data, self.fetched_at = message.data, time.time()
        status = self.status_line
        status.remove_class("down")
        status.update(
            f"{self.client.url} · updated {time.strftime('%H:%M:%S')} · every {self.interval:g}s"
        )
        self._render_all()

    def on_fetch_failed(self, message: FetchFailed) -> None:
        self._fetching = False
        if not self.status_line.is_attached:
            return
        exc = message.error
        if isinstance(exc, KernelUnreachable):
            what = f"cannot reach the llmos kernel at {exc.url} ({exc.reason})"
        elif exc.status in (401, 403):
            what = f"the kernel refused the token: {exc.message}"
        else:
            what = f"the kernel answered with an error: {exc.message}"
        shown = f" · showing data from {time.strftime('%H:%M:%S', time.localtime(self.fetched_at))}"
        status = self.status_line
        status.add_class("down")
        status.update(
            f"⚠ {what} · retrying every {self.interval:g}s" + (shown if self.fetched_at else "")
        )

    # -- drawing -------------------------------------------------------------------
    def _render_all(self) -> None:
        data = self.data
        if data is None:
            return
        self.header_bar.update(view.header(data))
        self._render_procs(data)
        self.device_table.clear()
        for d in data.get("devices") or []:
            self.device_table.add_row(*view.device_cells(d))
        self.queue_box.update(view.queues(data))
        lines = view.alert_lines(data)
        self.alert_box.update(Text("\n").join(lines) if lines else "no alerts")

    def _render_procs(self, data: Row) -> None:
        table = self.proc_table
        selected, cursor = self.selected(), table.cursor_row
        now = float(data.get("time") or time.time())
        rows = view.visible(list(data.get("processes") or []), self.show_all, now)
        self.order = view.sort_rows(rows, self.sort_column, self.reverse)
        table.clear()
        for p in self.order:
            table.add_row(*view.proc_cells(p), key=str(p.get("pid")))
        # the cursor follows its process; if that one is gone, it keeps its row
        pids = [p.get("pid") for p in self.order]
        if selected is not None and selected.get("pid") in pids:
            table.move_cursor(row=pids.index(selected.get("pid")), animate=False)
        elif pids:
            table.move_cursor(row=min(cursor, len(pids) - 1), animate=False)
        self._retitle()

    def _redraw(self) -> None:
        """After a key changed what to show: from the data at hand, no new fetch."""
        self._render_all()
        self._retitle()

    def _retitle(self) -> None:
        shown = "all processes" if self.show_all else "live processes"
        label = view.sort_label(self.sort_column, self.reverse)
        self.proc_table.border_title = f"{shown} · sort {label}"

    def selected(self) -> Row | None:
        """The process under the cursor, as last fetched."""
        row = self.proc_table.cursor_row
        return self.order[row] if 0 <= row < len(self.order) else None

    def say(self, text: str, error: bool = False) -> None:
        """The outcome of a key, on the message line (kernel text is never markup)."""
        mark = Text("✗ ", "bold red") if error else Text("✓ ", "green")
        self.message_line.update(mark + Text(text, "bold red" if error else ""))

    def on_outcome(self, message: Outcome) -> None:
        if not self.status_line.is_attached:
            return
        self.say(message.text, message.error)
        self.refresh_now()

    # -- keys ----------------------------------------------------------------------
    def action_sort(self) -> None:
        self.sort_column = (self.sort_column + 1) % len(view.PROC_COLUMNS)
        self.reverse = False
        self._redraw()

    def action_reverse(self) -> None:
        self.reverse = not self.reverse
        self._redraw()

    def action_toggle_all(self) -> None:
        self.show_all = not self.show_all
        self._redraw()

    def action_kill(self) -> None:
        proc = self.selected()
        if proc is None:
            self.say("no process selected", error=True)
            return
        pid, name, state = proc.get("pid"), proc.get("name"), proc.get("state")
        if state in view.OVER:
            self.say(f"process {pid} ({name}) is already {state}", error=True)
            return

        def answered(yes: bool | None) -> None:
            if not yes:
                self.say(f"process {pid} left running")
                return
            self._act(
                lambda: self.client.kill(int(pid or 0)),
                lambda r: (
                    f"process {r.get('pid', pid)} ({r.get('name', name)}) is {r.get('state')}"
                ),
            )

        self.push_screen(Confirm(f"Kill process {pid} ({name})?"), answered)

    def action_renice(self, delta: int) -> None:
        proc = self.selected()
        if proc is None:
            self.say("no process selected", error=True)
            return
        pid, name = int(proc.get("pid") or 0), proc.get("name")
        priority = int(proc.get("priority") or 0) + delta
        if not 0 <= priority <= MAX_PRIORITY:
            self.say(f"priorities are 0..{MAX_PRIORITY}; process {pid} is at the edge", True)
            return
        self._act(
            lambda: self.client.renice(pid, priority),
            lambda r: f"process {pid} ({name}) priority {r.get('priority')}",
        )

    @work(thread=True, group="act")
    def _act(self, call: Callable[[], Row], done: Callable[[Row], str]) -> None:
        """Run one kill or renice off the UI thread; the kernel's word comes back as
        an Outcome (its error message, if it said no)."""
        try:
            with self._lock:
                result = call()
        except ApiError as exc:
            self.post_message(Outcome(exc.message, error=True))
        else:
            self.post_message(Outcome(done(result)))
