"""Every variable the settings and scripts read is documented in .env.example."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READS = re.compile(r'env(?:\.\w+)?\(\s*"([A-Z0-9_]+)"|environ\.get\("([A-Z0-9_]+)"')


def test_every_setting_variable_is_in_env_example():
    sources = [*ROOT.glob("project/settings/*.py"), *ROOT.glob("scripts/*.py")]
    read = {a or b for path in sources for a, b in READS.findall(path.read_text())}
    documented = set(re.findall(r"^(?:# )?([A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert len(read) > 40
    assert read - documented == set()
