"""model.heap: what a command loads to keep is frozen out of the cyclic collector's
passes, and only inside a command."""

import gc

from compiler.model import heap


def test_long_lived_freezes_inside_a_command_and_the_command_unfreezes() -> None:
    assert gc.get_freeze_count() == 0
    with heap.command():
        with heap.long_lived():
            assert not gc.isenabled()
            kept = [[i] for i in range(1000)]
        assert gc.isenabled()
        assert gc.get_freeze_count() >= len(kept)
    assert gc.get_freeze_count() == 0


def test_outside_a_command_the_collector_is_left_as_it_was() -> None:
    with heap.long_lived():
        assert gc.isenabled()
        kept = [[i] for i in range(1000)]
    assert gc.get_freeze_count() == 0 and len(kept) == 1000


def test_a_disabled_collector_stays_disabled() -> None:
    gc.disable()
    try:
        with heap.command(), heap.long_lived():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()

