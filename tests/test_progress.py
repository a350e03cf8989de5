"""A long step shows what runs and for how long, on a terminal only, and quick steps stay quiet."""

from __future__ import annotations

import io
import time

from fqdnpolicy.progress import Status


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_step_longer_than_the_threshold_is_shown_with_its_time() -> None:
    out = Terminal()
    with Status(out, after=0.05, every=0.02).step("building the engine"):
        time.sleep(0.2)
    text = out.getvalue()
    assert "\rbuilding the engine... " in text
    assert text.endswith(" s\n")
    assert "\rbuilding the engine: " in text


def test_a_quick_step_draws_nothing() -> None:
    out = Terminal()
    with Status(out, after=1.0).step("loading"):
        pass
    assert out.getvalue() == ""


def test_nothing_is_drawn_where_the_stream_is_no_terminal() -> None:
    out = io.StringIO()
    with Status(out, after=0.0, every=0.01).step("rendering"):
        time.sleep(0.05)
    assert out.getvalue() == ""


def test_a_step_that_raises_stops_its_display() -> None:
    out = Terminal()
    try:
        with Status(out, after=0.01, every=0.01).step("loading"):
            time.sleep(0.05)
            raise ValueError("bad input")
    except ValueError:
        pass
    drawn = out.getvalue()
    time.sleep(0.05)
    assert out.getvalue() == drawn  # nothing drawn after the step ended
