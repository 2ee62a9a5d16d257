"""``python -m genlab.table``: a paper's table as a config (``conf/table/<name>.yaml``), run and rendered.

``list`` the tables; ``run TABLE`` its runs still to do (one Hydra multirun of ordinary genlab runs, each in a
fixed folder; a longer budget continues the recorded shorter run), recorded in one JSON-lines file per table;
``status TABLE``; ``render TABLE``: its section of experiments/RESULTS.md and its curves, from the records alone.
"""

from genlab.table.spec import Table, TableError, load_table

__all__ = ["Table", "TableError", "load_table"]
