"""``python -m genlab.table``: a paper's table as a config (``conf/table/<name>.yaml``), run, recorded, rendered."""

from genlab.table.spec import Table, TableError, load_table

__all__ = ["Table", "TableError", "load_table"]
