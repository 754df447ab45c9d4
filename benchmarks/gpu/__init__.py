"""The GPU suite behind ``benchmarks/bench_gpu.py``: one topic per module on ``base.Topic``.

Every figure is a ratio against NumPy on the same machine, same run. Topics, in the order
they run (each run's record is a part of gpu.json, keyed as below):

- ``sync`` (``--parts s``, `sync.py`): implicit synchronization and host transfers;
- ``b`` (`numgrad.py`): one full numerical gradient for several ``chunk_size`` values;
- ``a`` (`training.py`): backprop training throughput and the crossover batch;
- ``c`` (`ch4.py`): the book's chapter 4 experiment, with (b)'s fastest ``chunk_size``.

`environment.py` records the machine, `report.py` renders gpu.md (parts in key order) and
merges saved runs. The modules import ``_common`` from ``benchmarks/``, which is first on
``sys.path`` when ``bench_gpu.py`` runs as a script.
"""

from __future__ import annotations

from .base import Topic
from .ch4 import Chapter4
from .numgrad import NumericalGradient
from .sync import SyncProbe
from .training import TrainingThroughput

TOPICS: tuple[type[Topic], ...] = (SyncProbe, NumericalGradient, TrainingThroughput, Chapter4)

__all__ = ["TOPICS", "Chapter4", "NumericalGradient", "SyncProbe", "Topic", "TrainingThroughput"]
