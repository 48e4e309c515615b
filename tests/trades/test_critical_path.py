"""docs/critical-path.md lists exactly the trade state machine's transitions."""

import re

from django.conf import settings

from apps.trades.models import Trade

ROW = re.compile(r"^\| `(\w+)` \| ([A-Z_]+) \| ([A-Z_]+) \|", re.M)


def test_the_map_lists_exactly_the_state_machines_transitions():
    text = (settings.BASE_DIR / "docs" / "critical-path.md").read_text()
    documented = set(ROW.findall(text))
    actual = {
        (t.name, str(t.source), str(t.target))
        for t in Trade._meta.get_field("state").get_all_transitions(Trade)
    }
    assert len(actual) == 21
    assert documented == actual
    for name in {name for name, _, _ in actual}:
        assert hasattr(Trade, name)
