"""The prose of the OpenAPI document and the shapes no code module declares: one ``Operation``
per endpoint (summary, description, tag, success responses, which declared query parameters
its view parses, extra error statuses), the error responses' descriptions, the envelope and
the security schemes. ``apidoc`` joins this table with what the code declares (routes, access,
filters, serializer fields, patchable fields) into the document. No Flask here.

Keep to prose and references here: a parameter's type, a field's type, a route's security and
its usual error statuses come from the code, never from this table.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import batches, datasets, listing, param_types, params, thumbnails


class QueryParam(Protocol):
    """A declared query parameter: a ``listing.Filter`` or a ``param_types.Param``."""

    @property
    def param(self) -> str: ...
    @property
    def parse(self) -> Any: ...
    @property
    def help(self) -> str: ...


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def ok(
    description: str, data: Mapping[str, Any] | None = None, *, page: bool = False
) -> dict[str, Any]:
    """A success response in the envelope; ``page``: ``data`` is a list with ``meta``."""
    part: dict[str, Any] = {"type": "object"}
    if data is not None:
        part["properties"] = {"data": {"type": "array", "items": data} if page else data}
        if page:
            part["properties"]["meta"] = ref("types.APIMeta")
        part["required"] = ["success", "data"]
    schema = {"allOf": [ref("types.APIResponse"), part]}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def raw(
    description: str, media_type: str, schema: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A response that is not JSON (a file, a page, metrics text)."""
    return {
        "description": description,
        "content": {media_type: {"schema": dict(schema or {"type": "string", "format": "binary"})}},
    }


def bare(description: str) -> dict[str, Any]:
    return {"description": description}


@dataclass(frozen=True)
class Operation:
    operation_id: str
    tag: str
    summary: str
    responses: Mapping[str, Mapping[str, Any]]  # success ones, and any of a shape of its own
    description: str = ""
    # The declarations the view parses its query with, read when the document is generated
    # (so a filter added to listing.FILTERS is in the next document, and a test can add one).
    query: Callable[[], tuple[QueryParam, ...]] = tuple
    path: Mapping[str, str] = field(default_factory=dict)  # path variable -> description
    body: Mapping[str, Any] | None = None  # the request body object
    errors: tuple[int, ...] = ()  # error statuses beyond the ones apidoc derives


def json_body(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": ref(schema)}}}


def _option(name: str) -> QueryParam:
    return next(option for option in listing.OPTIONS if option.param == name)


THUMBNAIL_SIZE = param_types.Param(
    "size",
    param_types.TypedParser(
        lambda n, t: params.parse_int(n, t), {"type": "integer", "enum": list(thumbnails.SIZES)}
    ),
    "longest side in pixels",
    required=True,
)
# limit and offset of the lists that take params.parse_page's defaults (projects, batches).
_PAGE_DEFAULTS = inspect.signature(params.parse_page).parameters
PAGE = param_types.page_params(
    _PAGE_DEFAULTS["default_limit"].default, _PAGE_DEFAULTS["max_limit"].default
)

DATA, DEVICES, SITE, FILES, SYNC, OPS, UI = (
    "Datasets & data",
    "Devices & provisioning",
    "Site gateway",
    "Files",
    "Sync",
    "Operations",
    "Inspection UI",
)
TAGS = (DATA, DEVICES, SITE, FILES, SYNC, OPS, UI)

UPLOAD_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["image"],
                "properties": {
                    "image": {
                        "type": "string",
                        "format": "binary",
                        "description": "JPEG or PNG (WebP/BMP accepted), at most [ingest] "
                        "max_upload_bytes",
                    },
                    "metadata": {
                        "type": "string",
                        "description": "JSON: model_id, model_version, source, timestamp, "
                        "device_id, filename, annotations[{class_value, "
                        "type, geometry, confidence, z_order}]",
                    },
                },
            }
        }
    },
}

# endpoint (as Flask names it) -> its operation. A route missing here fails the generator.
OPERATIONS: dict[str, Operation] = {
    "ui.index": Operation(
        "uiIndex",
        UI,
        "The inspection page",
        {"200": raw("HTML page", "text/html", {"type": "string"}), "304": bare("Not modified")},
    ),
    "ui.static_file": Operation(
        "uiStatic",
        UI,
        "A static file of the inspection page",
        {"200": raw("The file", "*/*"), "304": bare("Not modified")},
        path={"name": "File name under the package's static folder"},
    ),
    "authcheck.upload_allowed": Operation(
        "uploadAllowed",
        DEVICES,
        "May these credentials upload? (the reverse proxy's check)",
        {"204": bare("The credentials may upload")},
        "Asked by the nginx front (deploy/nginx/edgecatalog.conf, auth_request) with the headers "
        "of a POST /device/images/upload before it reads the body, so an unauthenticated upload "
        "is refused unread. Same rule as the upload route; reads no body; asking spends none of "
        "a device key's rate.",
    ),
    "annotations.create_annotation": Operation(
        "createAnnotation",
        DATA,
        "Add a manual annotation",
        {"201": ok("Created", ref("types.AnnotationDTO"))},
        body=json_body("AnnotationCreateRequest"),
        errors=(404,),
    ),
    "annotations.patch_annotation": Operation(
        "updateAnnotation",
        DATA,
        "Update an annotation",
        {"200": ok("The updated annotation", ref("types.AnnotationDTO"))},
        path={"annotation_id": "Annotation id"},
        body=json_body("AnnotationUpdateRequest"),
    ),
    "annotations.delete_annotation": Operation(
        "deleteAnnotation",
        DATA,
        "Delete an annotation",
        {
            "200": ok(
                "Deleted",
                {
                    "type": "object",
                    "properties": {"id": {"type": "integer"}, "deleted": {"type": "boolean"}},
                },
            )
        },
        path={"annotation_id": "Annotation id"},
    ),
    "batches.list_batches": Operation(
        "listBatches",
        DATA,
        "List batches",
        {"200": ok("Paginated batch list, newest first", ref("Batch"), page=True)},
        "404 when device_id names a device the catalog does not know.",
        query=lambda: (*batches.BATCH_FILTERS, *PAGE),
        errors=(404,),
    ),
    "batches.get_batch": Operation(
        "getBatch",
        DATA,
        "Get a batch",
        {"200": ok("The batch", ref("Batch"))},
        path={"batch_id": "Batch id"},
    ),
    "batches.patch_batch": Operation(
        "updateBatch",
        DATA,
        "Update a batch",
        {"200": ok("The updated batch", ref("Batch"))},
        "Assign/unassign a project; move the stage along collecting -> complete -> unassigned "
        "-> annotating (409 otherwise).",
        path={"batch_id": "Batch id"},
        body=json_body("BatchUpdateRequest"),
        errors=(409,),
    ),
    "images.list_images": Operation(
        "listImages",
        DATA,
        "List images",
        {"200": ok("Paginated image list", ref("types.ImageDetailResponse"), page=True)},
        "Returns images with optional filters for project, batch, device, annotation status, "
        "dataset split, class values, and text search. Supports eager annotation loading and "
        "inline streaming URLs. 404 when device_id names a device the catalog does not know.",
        query=lambda: (*listing.FILTERS, *listing.OPTIONS),
        errors=(404,),
    ),
    "images.image_facets": Operation(
        "imageFacets",
        DATA,
        "Facet counts and histograms of the images a list selects",
        {"200": ok("The facets (and histograms when asked); meta.total is the list's total")},
        "Edge catalog extension. The list's filters (same parameters, same meaning) and, per "
        "facet, [{value, count}] sorted by count then value, with truncated and other (what "
        "the values left out hold). A facet whose own filter the request gives is counted "
        "without it (excludes_own_filter: true). Exact, from the trigger-kept count tables "
        "where they cover the filters, else a grouped count over the rows.",
        query=lambda: (*listing.FILTERS, *listing.FACET_OPTIONS),
        errors=(404,),
    ),
    "images.get_image": Operation(
        "getImage",
        DATA,
        "Get an image",
        {"200": ok("The image with its annotations", ref("types.ImageDetailResponse"))},
        query=lambda: (_option("include_image_url"),),
        path={"image_id": "Image id"},
    ),
    "images.patch_images": Operation(
        "updateImages",
        DATA,
        "Change many images at once",
        {
            "200": ok(
                "How many images the selection held, how many changed, and how many kept "
                "their split for its lock",
                ref("BulkUpdateResult"),
            )
        },
        "Bulk change: ids (at most 10,000) or filter (the list's filters, each as its "
        "query-string text; any number of images, those matching when the request starts), "
        "and set (annotation_status, split, split_locked, pinned) and/or assign_split "
        "(shares of train/val/test/none: each image's split from its content hash, the same "
        "image always in the same split). A locked split never moves unless force is true. "
        "Applied 1,000 images per transaction; every changed image's updated_at is set and a "
        "synced image's change is queued for upstream as a single edit's. With an "
        "Idempotency-Key header the whole request is idempotent: a retry goes on from the "
        "last committed chunk, or gets the first answer once done; the same key with another "
        "body is a 400.",
        body=json_body("ImageBulkUpdateRequest"),
        errors=(404,),
    ),
    "images.patch_image": Operation(
        "updateImage",
        DATA,
        "Update an image",
        {"200": ok("The updated image", ref("types.ImageDetailResponse"))},
        "Partial update. A synced image's change is queued for upstream.",
        path={"image_id": "Image id"},
        body=json_body("ImageUpdateRequest"),
        errors=(409,),
    ),
    "projects.list_projects": Operation(
        "listProjects",
        DATA,
        "List projects",
        {"200": ok("Projects", ref("Project"), page=True)},
        query=lambda: PAGE,
    ),
    "projects.create_project": Operation(
        "createProject",
        DATA,
        "Create a project",
        {"201": ok("Created", ref("Project"))},
        body=json_body("ProjectCreateRequest"),
        errors=(409,),
    ),
    "upload.upload_image": Operation(
        "uploadImage",
        DEVICES,
        "Upload an image from a device",
        {
            "200": ok("Already stored (duplicate: true)", ref("UploadResult")),
            "201": ok("Stored", ref("UploadResult")),
        },
        "The cloud's device upload contract. A device key naming another device is refused "
        "(403 DEVICE_MISMATCH), as is one marking an annotation reviewed, source manual or "
        "import (403 MANUAL_SOURCE_FORBIDDEN).",
        body=UPLOAD_BODY,
        errors=(507,),
    ),
    "site.device_self": Operation(
        "siteDeviceSelf",
        SITE,
        "The calling device, as its site gateway knows it",
        {"200": ok("The device", ref("SiteDevice"))},
        "The cloud's GET /device/self, plus gateway: what a device may mirror to this gateway "
        "beyond the cloud's routes. A device key only (403 for a bearer token). Served when "
        "[site] enabled.",
        errors=(403,),
    ),
    "site.upload_image": Operation(
        "siteUploadImage",
        SITE,
        "Upload an image from a device to its site gateway",
        {
            "201": ok("Stored", ref("UploadResult")),
        },
        "The cloud's device upload, answered as the cloud does: 201, or 409 DUPLICATE_IMAGE "
        "when these bytes are stored already, with their ids in data (an UploadResult). The "
        "image keeps the device's "
        'device_id, capture time, model and annotations, "manual" ones included (the device\'s '
        "reviewers'). An Idempotency-Key seen before from the same device gets the first "
        "answer again, also after a restart ([site] idempotency_hours). 507 while the gateway "
        "has no room: the device keeps the image queued. Served when [site] enabled.",
        body=UPLOAD_BODY,
        errors=(403, 409, 507),
    ),
    "site.patch_image": Operation(
        "siteUpdateImage",
        SITE,
        "Mirror a device's change of an image's fields",
        {
            "200": ok(
                "The image; data.superseded lists the fields kept", ref("types.ImageDetailResponse")
            )
        },
        "The cloud's PATCH /data/images/{id}, with edited_at: the time the device made the "
        "change. A field changed at the gateway at or after edited_at keeps its value (the "
        "later edit wins), and so does the split of an image locked at the gateway. A device "
        "key changes only its own device's images (403). Served when [site] enabled.",
        path={"image_id": "Image id (the gateway's, as the upload answered it)"},
        body=json_body("SiteImageUpdateRequest"),
        errors=(403,),
    ),
    "site.create_annotation": Operation(
        "siteCreateAnnotation",
        SITE,
        "Add an annotation as a device sends it",
        {"201": ok("Created", ref("types.AnnotationDTO"))},
        "The cloud's POST /data/annotations: an annotation in the upload's form (normalized "
        "geometry, confidence, source). Idempotency-Key as on the upload. Served when [site] "
        "enabled.",
        body=json_body("SiteAnnotationCreateRequest"),
        errors=(403, 404, 409),
    ),
    "site.put_annotations": Operation(
        "siteReplaceAnnotations",
        SITE,
        "Mirror a device's annotations of an image (edits and deletions)",
        {"200": ok("What changed", ref("AnnotationSetResult"))},
        "The device's whole annotation set of the image as of edited_at. Annotations the "
        "gateway has unchanged stay (and keep their ids); the others are deleted or added. "
        "When the image's annotations were edited at the gateway at or after edited_at, "
        "nothing changes (applied: false). Served when [site] enabled.",
        path={"image_id": "Image id (the gateway's, as the upload answered it)"},
        body=json_body("AnnotationSetRequest"),
        errors=(403,),
    ),
    "files.get_file": Operation(
        "getFile",
        FILES,
        "Download an image file",
        {
            "200": raw("The file", "image/*"),
            "206": raw("A byte range of the file", "image/*"),
            "304": bare("Not modified (ETag / If-Modified-Since)"),
        },
        "The bytes by image id only, with a bearer token or the signature of the image's "
        "image_url. Supports Range and conditional requests.",
        path={"image_id": "Image id"},
        errors=(410, 416),
    ),
    "exports.list_exports": Operation(
        "listExports",
        DATA,
        "List the dataset exports planned so far",
        {"200": ok("Exports, newest first", ref("DatasetExport"), page=True)},
        "One entry per whole archive served (a resumed range or a 304 adds none): its format, "
        "the filters it selected with, and when its snapshot was taken. The page's \"changed "
        'since the last export" queue is the images with updated_after the newest one.',
        query=lambda: PAGE,
    ),
    "exports.export_dataset": Operation(
        "exportDataset",
        DATA,
        "Export a view as a dataset archive (COCO, YOLO, JSON Lines or CSV)",
        {
            "200": raw("The ZIP archive, streamed as it is written", "application/zip"),
            "206": raw("A byte range of the archive", "application/zip"),
            "304": bare("Not modified (If-None-Match)"),
        },
        "Every image the list's filters select (same parameters, same meaning; paging and "
        "sorting do not apply), in id order, as a ZIP of stored members whose length and ETag "
        "are known before the first byte: Range and If-Range resume a broken download with "
        "the same bytes. coco: annotations/instances_<split>.json and images/<split>/; yolo: "
        "data.yaml, images/<split>/ and labels/<split>/ (both leave out images whose split "
        "is none unless assign_unsplit gives them one); jsonl: images.jsonl; csv: "
        "annotations.csv. Images whose bytes are not on the device are listed in missing.txt.",
        query=lambda: (*listing.FILTERS, *datasets.EXPORT_OPTIONS),
        path={"fmt": "coco, yolo, jsonl or csv; another is a 400 naming it"},
        errors=(416,),
    ),
    "thumbnails.get_thumbnail": Operation(
        "getThumbnail",
        FILES,
        "A JPEG thumbnail of an image",
        {"200": raw("The thumbnail", "image/jpeg"), "304": bare("Not modified")},
        query=lambda: (THUMBNAIL_SIZE,),
        path={"image_id": "Image id"},
        errors=(410, 422, 503),
    ),
    "ops.healthz": Operation(
        "healthz",
        OPS,
        "Liveness",
        {"200": ok("The process answers", ref("Health"))},
        "No auth and no database work.",
    ),
    "ops.readyz": Operation(
        "readyz",
        OPS,
        "Readiness",
        {
            "200": ok("Ready", ref("Readiness")),
            "503": {
                "description": "Not ready; data.checks says which check fails",
                "content": {"application/json": {"schema": ref("NotReadyResponse")}},
            },
        },
        "Database answers, migrations current, data folder writable, free disk above the "
        "[retention] limits. No auth; no paths or secrets in the body.",
    ),
    "ops.metrics": Operation(
        "metrics",
        OPS,
        "Prometheus metrics",
        {"200": raw("Prometheus text exposition format", "text/plain", {"type": "string"})},
    ),
    "ops.openapi_json": Operation(
        "openapi",
        OPS,
        "This document",
        {"200": raw("OpenAPI 3 document", "application/json", {"type": "object"})},
    ),
    "sync.sync_status": Operation(
        "syncStatus", SYNC, "Store-and-forward status", {"200": ok("Sync state", ref("SyncStatus"))}
    ),
}

# Error status -> (component name, description). Every error body is ErrorResponse.
ERRORS: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "Invalid parameters or body (error.details names the field)"),
    401: ("Unauthorized", "Missing or invalid credentials"),
    403: ("Forbidden", "Credentials lack the needed scope, or a bad URL signature"),
    404: ("NotFound", "Not found"),
    409: ("Conflict", "Conflict with the current state"),
    410: ("Gone", "The file was evicted after sync"),
    413: ("PayloadTooLarge", "Body too large"),
    414: ("UriTooLong", "Query string too long"),
    415: ("UnsupportedMediaType", "Unsupported content type"),
    416: ("RangeNotSatisfiable", "Range not satisfiable"),
    422: ("UnprocessableImage", "Stored image cannot be processed"),
    429: (
        "RateLimited",
        (
            "The device key is over [auth] device_requests_per_minute "
            "(RATE_LIMITED); Retry-After says when to retry"
        ),
    ),
    500: ("InternalError", "Unexpected error (details carry the request id)"),
    503: (
        "ServiceUnavailable",
        (
            "Busy (THUMBNAILS_BUSY), or the database server cannot be reached "
            "(DATABASE_UNAVAILABLE); retry after Retry-After"
        ),
    ),
    507: (
        "InsufficientStorage",
        ("Disk full of unsynced data, or the device's share of it used (DEVICE_SHARE_EXCEEDED)"),
    ),
}
RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before asking again",
        "schema": {"type": "integer", "minimum": 1},
    }
}
WITH_RETRY_AFTER = frozenset({429, 503})

INFO = {
    "title": "edgecatalog",
    "description": "Offline, edge-side image catalog. The /data/images part follows the "
    "upstream cloud's contract (types.* schemas), extended only additively. "
    "Every JSON body is the envelope {success, data, meta, error}. Generated "
    "from the code by edgecatalog.apidoc.",
}

SECURITY_SCHEMES = {
    "BearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "JWT with scope read or write (edgecatalog token).",
    },
    "DeviceKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Device-Key",
        "description": "adk_ device key listed in [auth] device_keys.",
    },
    "UrlExpires": {
        "type": "apiKey",
        "in": "query",
        "name": "expires",
        "description": "Expiry of a signed file URL (with signature).",
    },
    "UrlSignature": {
        "type": "apiKey",
        "in": "query",
        "name": "signature",
        "description": "HMAC of a signed file URL (from image_url).",
    },
}
# The query parameters of a signed file URL (access ``signed_url``).
SIGNED_URL_PARAMS = (
    param_types.Param(
        "expires",
        param_types.TypedParser(params.parse_int, {"type": "integer"}),
        "expiry (Unix seconds) of a signed URL",
    ),
    param_types.Param(
        "signature", param_types.TEXT, "HMAC signature of a signed URL (from image_url)"
    ),
)

TIMESTAMP = {"type": "string", "description": "RFC 3339 UTC timestamp; empty string when unset"}

# Schemas of the envelope (envelope.py) and of the bodies no field table declares.
SCHEMAS: dict[str, Any] = {
    "DatasetExport": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "format": {"type": "string", "enum": ["coco", "yolo", "jsonl", "csv"]},
            "filters": {"type": "object", "description": "the list filters it selected with"},
            "created_at": {"type": "string", "description": "when its snapshot was taken"},
        },
    },
    "BulkUpdateResult": {
        "type": "object",
        "properties": {
            "matched": {"type": "integer", "description": "images selected (that exist)"},
            "changed": {"type": "integer", "description": "images whose fields changed"},
            "skipped_locked": {
                "type": "integer",
                "description": "images whose locked split stayed (without force)",
            },
        },
    },
    "types.APIResponse": {
        "type": "object",
        "properties": {
            "data": {},
            "error": ref("types.APIError"),
            "meta": ref("types.APIMeta"),
            "success": {"type": "boolean"},
        },
    },
    "types.APIError": {
        "type": "object",
        "properties": {
            "code": {"type": "string"},
            "details": {"type": "string"},
            "message": {"type": "string"},
        },
    },
    "types.APIMeta": {
        "type": "object",
        "properties": {
            "count": {"type": "integer"},
            "limit": {"type": "integer"},
            "offset": {"type": "integer"},
            "total": {"type": "integer"},
        },
    },
    "ErrorResponse": {
        "allOf": [
            ref("types.APIResponse"),
            {
                "type": "object",
                "required": ["success", "error"],
                "properties": {
                    "success": {"type": "boolean", "enum": [False]},
                    "error": {
                        "allOf": [
                            ref("types.APIError"),
                            {
                                "type": "object",
                                "required": ["code", "message", "details"],
                                "properties": {
                                    "code": {"type": "string", "pattern": "^[A-Z][A-Z0-9_]*$"}
                                },
                            },
                        ]
                    },
                },
            },
        ]
    },
    "UploadResult": {
        "type": "object",
        "required": ["image_id", "batch_id", "storage_key"],
        "properties": {
            "image_id": {"type": "integer"},
            "batch_id": {"type": "integer"},
            "storage_key": {"type": "string"},
            "duplicate": {
                "type": "boolean",
                "description": "true when the same bytes were already stored (200)",
            },
        },
    },
    "SiteDevice": {
        "type": "object",
        "properties": {
            "device_id": {"type": "string"},
            "endpoint_id": {"type": "string"},
            "status": {"type": "string"},
            "name": {"type": "string"},
            "gateway": {
                "type": "object",
                "description": "Only a site gateway sends it (never the cloud)",
                "properties": {
                    "version": {"type": "string"},
                    "mirrors": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "Outbox kinds the device may send here",
                    },
                },
            },
        },
    },
    "AnnotationSetResult": {
        "type": "object",
        "properties": {
            "image_id": {"type": "integer"},
            "applied": {"type": "boolean"},
            "added": {"type": "integer"},
            "removed": {"type": "integer"},
        },
    },
    "SyncStatus": {
        "type": "object",
        "properties": {
            "state": {
                "type": "string",
                "enum": ["idle", "syncing", "offline", "backoff", "auth_failed", "disabled"],
            },
            "enabled": {"type": "boolean"},
            "upstream_configured": {"type": "boolean"},
            "pending_count": {"type": "integer"},
            "pending_bytes": {"type": "integer"},
            "oldest_pending_age_seconds": {"type": "number", "nullable": True},
            "waiting_for_token_count": {"type": "integer"},
            "quarantined_count": {"type": "integer"},
            "unsupported_count": {"type": "integer"},
            "last_success_at": TIMESTAMP,
            "next_attempt_at": TIMESTAMP,
            "pending_by_priority": {
                "type": "array",
                "description": "Pending rows per priority (1 goes first; changes to images "
                "already upstream share the rules' last priority; -1: not yet decided by the "
                "selection rules)",
                "items": {
                    "type": "object",
                    "properties": {
                        "priority": {"type": "integer"},
                        "count": {"type": "integer"},
                        "bytes": {"type": "integer"},
                    },
                },
            },
            "skipped_count": {
                "type": "integer",
                "description": "Uploads the selection rules keep local",
            },
            "deferred_count": {
                "type": "integer",
                "description": "Uploads past their rule's quota, waiting for the next period",
            },
            "deferred_bytes": {"type": "integer"},
            "throughput_images_per_minute": {
                "type": "number",
                "description": "Uploads sent over about the last five minutes",
            },
            "throughput_bytes_per_second": {"type": "number"},
            "drain_eta_seconds": {
                "type": "number",
                "nullable": True,
                "description": "Pending bytes at the recent throughput; null when nothing was "
                "sent lately or nothing is pending",
            },
            "in_window": {
                "type": "boolean",
                "description": "Inside an [upstream] windows window (true when none are set)",
            },
            "next_window_at": {
                **TIMESTAMP,
                "description": "When the next sync window opens; empty inside one or without",
            },
            "last_error": {
                "type": "object",
                "nullable": True,
                "properties": {
                    "at": TIMESTAMP,
                    "status": {"type": "integer", "nullable": True},
                    "message": {"type": "string"},
                },
            },
        },
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string", "enum": ["ok"]}},
    },
    "Check": {
        "type": "object",
        "required": ["ok", "message"],
        "properties": {"ok": {"type": "boolean"}, "message": {"type": "string"}},
        "additionalProperties": {"type": "number"},
    },
    "Readiness": {
        "type": "object",
        "required": ["status", "checks"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "fail"]},
            "checks": {"type": "object", "additionalProperties": ref("Check")},
        },
    },
    "NotReadyResponse": {
        "allOf": [
            ref("ErrorResponse"),
            {"type": "object", "properties": {"data": ref("Readiness")}},
        ]
    },
}

# An annotation is sent normalized (stored as pixels): its request fields are typed in apidoc,
# with the code's limits.
UNIT = {"type": "number", "minimum": 0, "maximum": 1}
_GEOMETRY = "Normalized: bbox [xc, yc, w, h]; polygon [x1, y1, ...]"
# Request schema -> field -> its description, where the request differs from the response.
REQUEST_NOTES: dict[str, dict[str, str]] = {
    "BatchUpdateRequest": {"project_id": "null unassigns"},
    "AnnotationCreateRequest": {
        "geometry": _GEOMETRY,
        "confidence": "A manual annotation has none: only null",
    },
    "AnnotationUpdateRequest": {"geometry": _GEOMETRY, "confidence": "null clears a model's score"},
    "SiteAnnotationCreateRequest": {"geometry": _GEOMETRY},
}
REQUIRED = {
    "ProjectCreateRequest": ("name",),
    "AnnotationCreateRequest": ("image_id", "class_value", "type", "geometry"),
    "SiteAnnotationCreateRequest": ("image_id", "class_value", "type", "geometry"),
    "AnnotationSetRequest": ("annotations",),
}
EDITED_AT = {
    "type": "string",
    "format": "date-time",
    "description": "When the device made the change (RFC 3339); default: now. A time ahead of "
    "the gateway's clock counts as now.",
}
