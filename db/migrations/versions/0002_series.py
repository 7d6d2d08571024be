"""series: a table of the series of each study; every inference belongs to one series

Revision ID: 0002_series
Revises: 0001
Create Date: 2026-12-01 21:30:00

Upgrade: creates ``series`` (pseudonymous series key, modality, slice count, spacing, description
without PHI; unique per study), adds ``inferences.series_id`` and fills it from the rows already
there: the series key is the ``series_key`` the dashboard stored in ``inferences.series_result``
(JSON); rows without one (stored by other tools) get one series per study, keyed by the sha256 of
``"legacy:" + content_hash`` (32 hex characters, like ``core.imaging.study_key_for``). Slice count
= the length of the row's ``slice_probabilities``; modality from the study; description from
``series_result["series_description"]``; spacing unknown (never stored before). Then
``series_id`` becomes NOT NULL with its foreign key and index. Reviews are not touched: they keep
pointing at their inference, which now points at its series.

Downgrade drops ``inferences.series_id`` and the ``series`` table (the series keys stay in the
inference JSON, where the upgrade found them).

On SQLite the inferences table is rebuilt (batch mode); ``db.session.upgrade`` runs migrations
with ``PRAGMA foreign_keys=OFF`` and checks ``PRAGMA foreign_key_check`` before committing, the
procedure of the SQLite documentation ("ALTER TABLE", section 7).
"""
from collections.abc import Sequence
import hashlib
import json
from datetime import datetime, timezone
from typing import Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0002_series'
down_revision: Union[str, Sequence[str], None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def _legacy_key(content_hash: str) -> str:
    return hashlib.sha256(f"legacy:{content_hash}".encode()).hexdigest()[:32]


def _as_dict(value) -> dict:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def _as_list(value) -> list:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return []
    return value if isinstance(value, list) else []


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('series',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('study_id', sa.Integer(), nullable=False),
    sa.Column('series_key', sa.String(length=128), nullable=False),
    sa.Column('modality', sa.String(length=16), nullable=False),
    sa.Column('n_slices', sa.Integer(), nullable=False),
    sa.Column('spacing_z_mm', sa.Float(), nullable=True),
    sa.Column('spacing_y_mm', sa.Float(), nullable=True),
    sa.Column('spacing_x_mm', sa.Float(), nullable=True),
    sa.Column('description', sa.String(length=256), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('(spacing_z_mm IS NULL OR spacing_z_mm > 0) AND (spacing_y_mm IS NULL OR spacing_y_mm > 0) AND (spacing_x_mm IS NULL OR spacing_x_mm > 0)', name=op.f('ck_series_spacing_positive')),
    sa.CheckConstraint('n_slices >= 1', name=op.f('ck_series_n_slices_positive')),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_series_study_id_studies')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_series')),
    sa.UniqueConstraint('study_id', 'series_key', name=op.f('uq_series_study_id'))
    )
    op.create_index(op.f('ix_series_study_id'), 'series', ['study_id'], unique=False)
    with op.batch_alter_table('inferences') as batch_op:
        batch_op.add_column(sa.Column('series_id', sa.Integer(), nullable=True))

    if op.get_context().as_sql:
        _fill_offline()
    else:
        _fill_online()

    with op.batch_alter_table('inferences') as batch_op:
        batch_op.alter_column('series_id', existing_type=sa.Integer(), nullable=False)
        batch_op.create_index('ix_inferences_series_model', ['series_id', 'model_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_inferences_series_id_series'), 'series', ['series_id'], ['id'])


#: PostgreSQL's spelling of the series key of an inference row (offline ``--sql`` upgrades).
_PG_KEY = ("COALESCE(NULLIF(lower(i.series_result->>'series_key'), ''), "
           "substr(encode(sha256(convert_to('legacy:' || s.content_hash, 'UTF8')), 'hex'), 1, 32))")


def _fill_offline() -> None:
    """The data step as SQL text (``alembic upgrade --sql``): PostgreSQL only."""
    if op.get_context().dialect.name != "postgresql":
        raise NotImplementedError("offline (--sql) upgrade to 0002_series is written for PostgreSQL only")
    op.execute(
        "INSERT INTO series (study_id, series_key, modality, n_slices, description, created_at) "
        "SELECT study_id, series_key, modality, max(n_slices), max(description), min(created_at) FROM ("
        f"SELECT i.study_id, {_PG_KEY} AS series_key, s.modality, "
        "json_array_length(i.slice_probabilities::json) AS n_slices, "
        "left(COALESCE(i.series_result->>'series_description', ''), 256) AS description, i.created_at "
        "FROM inferences i JOIN studies s ON s.id = i.study_id) k GROUP BY study_id, series_key, modality"
    )
    op.execute(
        "UPDATE inferences AS i SET series_id = se.id FROM studies s, series se "
        f"WHERE s.id = i.study_id AND se.study_id = i.study_id AND se.series_key = {_PG_KEY}"
    )


def _fill_online() -> None:
    """One series row per (study, series key) found in the inference rows; sets ``series_id``."""
    bind = op.get_bind()
    studies = sa.table('studies', sa.column('id', sa.Integer), sa.column('modality', sa.String),
                       sa.column('n_slices', sa.Integer), sa.column('content_hash', sa.String))
    series = sa.table('series', sa.column('id', sa.Integer), sa.column('study_id', sa.Integer),
                      sa.column('series_key', sa.String), sa.column('modality', sa.String),
                      sa.column('n_slices', sa.Integer), sa.column('description', sa.String),
                      sa.column('created_at', sa.DateTime(timezone=True)))
    inferences = sa.table('inferences', sa.column('id', sa.Integer), sa.column('study_id', sa.Integer),
                          sa.column('series_id', sa.Integer), sa.column('series_result', sa.JSON),
                          sa.column('slice_probabilities', sa.JSON),
                          sa.column('created_at', sa.DateTime(timezone=True)))
    study_rows = {r.id: r for r in bind.execute(sa.select(studies))}
    made: dict[tuple[int, str], int] = {}
    rows = bind.execute(sa.select(inferences.c.id, inferences.c.study_id, inferences.c.series_result,
                                  inferences.c.slice_probabilities, inferences.c.created_at)
                        .order_by(inferences.c.id)).all()
    for row in rows:
        study = study_rows[row.study_id]
        result = _as_dict(row.series_result)
        key = str(result.get("series_key") or "").strip().lower() or _legacy_key(study.content_hash)
        if (row.study_id, key) not in made:
            n = len(_as_list(row.slice_probabilities)) or int(study.n_slices)
            description = str(result.get("series_description") or "")[:256]
            made[(row.study_id, key)] = bind.execute(
                series.insert().values(study_id=row.study_id, series_key=key, modality=study.modality,
                                       n_slices=n, description=description,
                                       created_at=row.created_at or datetime.now(timezone.utc))
                .returning(series.c.id)
            ).scalar_one()
        bind.execute(inferences.update().where(inferences.c.id == row.id)
                     .values(series_id=made[(row.study_id, key)]))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('inferences') as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_inferences_series_id_series'), type_='foreignkey')
        batch_op.drop_index('ix_inferences_series_model')
        batch_op.drop_column('series_id')
    op.drop_index(op.f('ix_series_study_id'), table_name='series')
    op.drop_table('series')
