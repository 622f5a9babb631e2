"""The conformance report: ``pytest conformance --report DIR`` (what ``tox -e report`` runs).

``plugin`` collects every test's outcome and comparisons; ``results`` holds them as a versioned JSON
document (``conformance.schema.json``); ``summary`` computes what the report says from that document;
``content`` lays it out as blocks that ``blocks`` renders to Markdown and self-contained HTML, with the
``heatmap``. ``python -m conformance.report`` re-renders a saved report and updates the README matrix.
"""
