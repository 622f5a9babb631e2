"""The suite's mutation self-test: a correct NumPy BatchNorm (``baseline``) and a catalogue of mutants
(``catalogue``), each carrying one bug class a real implementation has had, plugged in through ``--impl``
like any third party; ``verdict`` judges a run's report (``tox -e mutants``)."""
