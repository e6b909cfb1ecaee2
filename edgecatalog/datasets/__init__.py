"""Datasets in and out of the catalog: a view exported as a COCO, YOLO, JSON Lines or CSV
archive streamed as it is written, and COCO or YOLO datasets imported through the ingest path.
No Flask.

Export (``export``): the request (the list's filters, the format, ``include_images``,
``assign_unsplit``) is planned in one read snapshot into an ``archive.Archive``: a ZIP whose
every byte is decided before the first is sent (``zipformat``: stored members, CRC in each
local header, ZIP64 when needed), its generated members waiting in an unnamed temporary file
(``spool``), its images sent from their files as their turn comes. Where an image goes and
what it is called: ``naming``; the view's rows: ``select``; the formats: ``coco``, ``yolo``,
``tables`` (jsonl, csv), over ``placed``.

Import (``importer``): a ZIP or a folder (``source``: member names checked, sizes bounded),
read as COCO (``read_coco``) or YOLO (``read_yolo``, with ``miniyaml`` for ``data.yaml``),
validated whole before anything is stored, then stored through ``ingest``.
"""

from __future__ import annotations

from .archive import Archive, ArchiveFile, ExportBroken
from .export import EXPORT_OPTIONS, FORMATS, ExportRequest, build_export, parse_export

__all__ = [
    "EXPORT_OPTIONS",
    "FORMATS",
    "Archive",
    "ArchiveFile",
    "ExportBroken",
    "ExportRequest",
    "build_export",
    "parse_export",
]
