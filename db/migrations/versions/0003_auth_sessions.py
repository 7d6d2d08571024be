"""auth sessions: server-side rows behind the sign-in cookie

Revision ID: 0003_auth_sessions
Revises: 0002_series
Create Date: 2026-12-01 21:30:00

Adds ``auth_sessions`` (db.schema.AuthSession): one row per issued sign-in token, holding only
the SHA-256 of the token, its user, times (created, last seen, absolute expiry) and, once ended,
when and why.
"""
from collections.abc import Sequence
from typing import Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0003_auth_sessions'
down_revision: Union[str, Sequence[str], None] = '0002_series'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Create auth_sessions."""
    op.create_table('auth_sessions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ended_reason', sa.String(length=16), nullable=True),
    sa.CheckConstraint("ended_reason IS NULL OR ended_reason IN ('sign-out', 'idle', 'expired', 'ended-by-admin', 'user-inactive')", name=op.f('ck_auth_sessions_ended_reason')),
    sa.CheckConstraint('(revoked_at IS NULL) = (ended_reason IS NULL)', name=op.f('ck_auth_sessions_revoked_has_reason')),
    sa.CheckConstraint('length(token_hash) = 64', name=op.f('ck_auth_sessions_token_hash_length')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_auth_sessions_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_auth_sessions')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_auth_sessions_token_hash'))
    )
    op.create_index(op.f('ix_auth_sessions_user_id'), 'auth_sessions', ['user_id'], unique=False)


def downgrade() -> None:
    """Drop auth_sessions."""
    op.drop_index(op.f('ix_auth_sessions_user_id'), table_name='auth_sessions')
    op.drop_table('auth_sessions')
