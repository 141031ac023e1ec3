"""ksense's facts the benchmark needs, read from their one home in the Rust
source, so that a copy here cannot drift: the default model features."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _src(path):
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


def _strings(path, const):
    body = re.search(rf"{const}: \[&str; \d+\] =\s*\[([^\]]*)\]", _src(path)).group(1)
    return re.findall(r'"([^"]+)"', body)


DEFAULT_FEATURES = tuple(_strings("src/model/pipeline.rs", "DEFAULT_FEATURES"))
