"""One target under atheris (libFuzzer's mutators, hang and memory limits):
``python -m tests.fuzz.atheris_target NAME [libFuzzer flags]``; its corpus is
``build/fuzz/corpus/NAME``, the seeds at each start.

atheris's bytecode instrumentation miscompiles parts of our code on CPython 3.11 (a ``while``
over ``self.pos`` in ``ingest.rtmp.amf0`` stops terminating), so coverage does not come from it:
each input's outcome (refusal kind, events produced) is hashed onto libFuzzer counters, so an
input with a new outcome joins the corpus and gets mutated further.
"""

from __future__ import annotations

import shutil
import sys
import zlib
from pathlib import Path

import atheris

from tests.fuzz.targets import TARGETS

CORPORA = Path(__file__).resolve().parents[2] / "build" / "fuzz" / "corpus"
#: libFuzzer counters the outcomes are hashed onto.
OUTCOME_COUNTERS = 1 << 14
_COUNTERS = [atheris._reserve_counter() for _ in range(OUTCOME_COUNTERS)]


def main() -> None:
    target = TARGETS[sys.argv[1]]
    corpus = CORPORA / target.name  # fresh each start: the seeds, then what libFuzzer adds
    shutil.rmtree(corpus, ignore_errors=True)
    corpus.mkdir(parents=True)
    for i, seed in enumerate(target.seeds()):
        (corpus / f"seed{i}").write_bytes(seed[: target.max_len])
    run = target.run
    counters = _COUNTERS

    def one_input(data: bytes) -> None:
        atheris._trace_branch(
            counters[zlib.crc32(run(data).encode("utf-8", "backslashreplace")) % OUTCOME_COUNTERS]
        )

    args = [sys.argv[0], *sys.argv[2:], f"-max_len={target.max_len}", str(corpus)]
    atheris.Setup(args, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
