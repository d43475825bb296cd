"""pytest run in-process for the GPU session's tests steps (tools/gpu_session.py): collect first (checking
which modules the collection imported), then run the selected tests, on xdist workers when asked."""
import sys


class _Collector:
    """pytest plugin: keeps the items ``select`` accepts and notes the ``watched`` modules collection imported."""

    def __init__(self, select, watched):
        self.select, self.watched, self.node_ids, self.imported = select, watched, [], None

    def pytest_collection_finish(self, session):  # after -m / -k deselection
        self.node_ids = [item.nodeid for item in session.items if self.select is None or self.select(item)]
        self.imported = [m for m in self.watched if m in sys.modules]


class _Outcomes:
    """pytest plugin: outcome counts and failed test ids (with xdist, reported to the controller)."""

    def __init__(self):
        self.counts, self.failed = {}, []

    def pytest_runtest_logreport(self, report):
        if report.when == "call" or report.outcome != "passed":
            outcome = "error" if report.when != "call" and report.outcome == "failed" else report.outcome
            self.counts[outcome] = self.counts.get(outcome, 0) + 1
            if report.outcome == "failed":
                self.failed.append(report.nodeid)


def run_pytest(args, select=None, workers=0, forbidden=()):
    """Collects ``args`` here, keeps the items ``select(item)`` accepts, then runs them (``-n workers``
    with pytest-xdist when ``workers``). Raises AssertionError when the collection fails or imports a
    ``forbidden`` module, or a test fails; returns the counts."""
    import pytest

    common = ["-p", "no:cacheprovider"]
    collector = _Collector(select, forbidden)
    status = pytest.main(["--collect-only", "-q", *common, *args], plugins=[collector])
    result = {"args": args, "selected": len(collector.node_ids), "forbidden_imported_at_collection": collector.imported}
    if status not in (0, 5) or collector.imported:  # 5: nothing collected
        raise AssertionError(f"collection failed (exit status {int(status)}) or imported {collector.imported}: "
                             f"{result}")
    if not collector.node_ids:
        return {**result, "counts": {}}
    parallel = ["-n", str(workers)] if workers else []
    outcomes = _Outcomes()
    status = pytest.main(["-q", "-rfE", *common, *parallel, *collector.node_ids], plugins=[outcomes])
    result.update(exit_status=int(status), workers=workers, counts=outcomes.counts, failed=outcomes.failed[:50])
    if status != 0:
        raise AssertionError(f"pytest exit status {int(status)}: {outcomes.counts}, failed {outcomes.failed[:10]}")
    return result
