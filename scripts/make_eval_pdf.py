#!/usr/bin/env python3
"""Write tests/data/rag_eval/ferry_timetable.pdf, the PDF of the retrieval evaluation set.

A two-page leaflet in plain Helvetica lines (tests/helpers/rag.make_pdf), so pypdf reads it
the way it reads a real leaflet: one text line per line, headings on lines of their own.
Usage: python scripts/make_eval_pdf.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAGES = [
    [
        "Island Ferry Line - Timetable and Fares 2026",
        "",
        "The ferry MS Skarvholm connects Harbour Street pier with Skarvholm island.",
        "The crossing takes 35 minutes in calm weather.",
        "",
        "Summer timetable",
        "From 1 June to 31 August the ferry leaves the mainland every hour from 7:05 to 21:05.",
        "The last ferry back from the island leaves at 22:15.",
        "",
        "Winter timetable",
        "From 1 September to 31 May there are four departures a day from the mainland:",
        "7:05, 11:05, 15:05 and 18:05. There is no service on 25 December.",
        "",
        "Fares",
        "A return ticket costs 14 euros for adults and 7 euros for children aged 6 to 15.",
        "Children under 6 travel free. A bicycle costs 4 euros each way.",
        "A car with driver costs 48 euros return and must be booked in advance.",
    ],
    [
        "On board",
        "Dogs are allowed on the open deck when kept on a lead, but not in the cafe.",
        "The onboard cafe sells coffee, sandwiches and the famous Skarvholm fish soup.",
        "",
        "Tickets and bookings",
        "Buy tickets at the kiosk on Harbour Street pier or from the crew on board.",
        "Car spaces are booked by phone at 0471 20 40 60, at the latest the day before.",
        "",
        "Weather and cancellations",
        "In winds above 20 metres per second the ferry may be cancelled.",
        "Cancellations are announced on the display at the pier and by text message.",
        "",
        "Lost property",
        "Items left on board are kept at the pier kiosk for two weeks.",
    ],
]


def main() -> int:
    from tests.helpers.rag import make_pdf

    out = ROOT / "tests" / "data" / "rag_eval" / "ferry_timetable.pdf"
    out.write_bytes(make_pdf(PAGES))
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
