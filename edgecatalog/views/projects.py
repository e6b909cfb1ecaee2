"""GET /data/projects, POST /data/projects."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from .. import envelope, listing, projects
from ..access import requires
from ..serialize import project_to_dict
from ..web import json_body, settings
from . import bodies

bp = Blueprint("projects", __name__)


@bp.get("/data/projects")
@requires("read")
def list_projects():
    query = listing.parse_filtered_page(
        request.args, max_chars=settings()["limits.max_param_chars"]
    )
    page = projects.select_projects(query.limit, query.offset)
    data = [project_to_dict(row) for row in page.rows]
    return jsonify(
        envelope.ok(data, envelope.page_meta(len(data), page.limit, page.offset, page.total))
    )


@bp.post("/data/projects")
@requires("write")
def create_project():
    row = projects.create_project(bodies.parse_new_project(json_body()))
    return jsonify(envelope.ok(project_to_dict(row))), 201
