"""ksense's facts the benchmark needs, read from their one home in the Rust
source, so that a copy here cannot drift: the softirq vector names, the
default model features, the calibration's per-interval event floor."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _src(path):
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


def _strings(path, const):
    body = re.search(rf"{const}: \[&str; \d+\] =\s*\[([^\]]*)\]", _src(path)).group(1)
    return re.findall(r'"([^"]+)"', body)


# As the model names them: softirq_<vector in lower case>.
SOFTIRQ_VECTORS = [v.lower() for v in _strings("src/probes/softirq.rs", "SOFTIRQ_VECTORS")]
DEFAULT_FEATURES = tuple(_strings("src/model/pipeline.rs", "DEFAULT_FEATURES"))
MIN_RUNQUEUE_EVENTS = int(re.search(r"MIN_RUNQUEUE_EVENTS: u64 = (\d+);", _src("src/signals/features.rs")).group(1))
