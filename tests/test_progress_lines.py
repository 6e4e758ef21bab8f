"""Progress on a console that is not a terminal: plain lines, not a bar redrawn in place."""
import io

from rich.console import Console
from rich.progress import Progress

from switchyard.console import PlainProgress, progress


def test_not_a_terminal_gets_a_line_per_tenth_per_new_description_and_at_the_end():
    buf = io.StringIO()
    target = Console(file=buf, force_terminal=False, width=200)
    with progress(target) as bar:
        assert isinstance(bar, PlainProgress)
        task = bar.add_task("answered", total=200)
        for _ in range(200):
            bar.advance(task)
        other = bar.add_task("stored in ClickHouse", total=4)
        bar.update(other, completed=2, description="stored (waiting)")
    lines = buf.getvalue().splitlines()
    assert lines[:11] == [f"answered: {n}/200" for n in range(0, 201, 20)]
    assert lines[11:] == ["stored in ClickHouse: 0/4", "stored (waiting): 2/4", "answered: 200/200",
                          "stored (waiting): 2/4"]
    assert "\r" not in buf.getvalue() and "━" not in buf.getvalue()  # no bar, no redraws


def test_a_terminal_gets_rich_bars():
    assert isinstance(progress(Console(file=io.StringIO(), force_terminal=True)), Progress)
