"""Objects per phase, as Prometheus scrapes them."""

from prometheus_client import CollectorRegistry, generate_latest

from flywheel.metrics import PhaseBook


def scrape(book: PhaseBook) -> str:
    registry = CollectorRegistry()
    registry.register(book)
    return generate_latest(registry).decode()


def test_objects_are_counted_by_phase_and_forgotten_on_delete():
    book = PhaseBook()
    book.record("Dataset", "a", "iris", "Pending")
    book.record("Dataset", "b", "iris", "Ready")
    book.record("Dataset", "a", "wine", "Ready")
    book.record("Dataset", "a", "iris", "Ready")  # a phase change replaces, not adds
    assert 'flywheel_objects{kind="Dataset",phase="Ready"} 3.0' in scrape(book)
    assert 'phase="Pending"' not in scrape(book)
    book.forget("Dataset", "a", "wine")
    assert 'flywheel_objects{kind="Dataset",phase="Ready"} 2.0' in scrape(book)
