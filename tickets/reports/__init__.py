"""Monthly SLA reports, in one place: `figures` (the pure math), `query` (the rows, read from the
database), `monthly` (a month loaded, as text and CSV) and `chart` (the PNG).

`/report` in the agents' group (`bot/reports.py`) and `supportbot report` both read them from here.
"""
