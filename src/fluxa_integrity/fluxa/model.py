"""The Chatbot Fluxa data model: collection names, enums and the current schema version.

docs/data-model.md describes every field; this module holds the values code needs.
"""

from __future__ import annotations

USERS = "users"
CONVERSATIONS = "conversations"
MESSAGES = "messages"
LOGS = "logs"
AUDIT_LOG = "auditLog"
ANALYTICS = "analytics"

#: Collections of the application database, in load order (parents first).
COLLECTIONS = (USERS, CONVERSATIONS, MESSAGES, LOGS, AUDIT_LOG, ANALYTICS)

#: Marker left by the generator so a rerun can tell its own half-loaded database apart.
META_COLLECTION = "_fluxa_meta"

#: The secondary system (e.g. a CRM) holding a synchronised copy of users lives in its own
#: database named ``<db><SECONDARY_SUFFIX>``; ``syncState`` records the last synchronisation.
SECONDARY_SUFFIX = "_secondary"
SYNC_STATE = "syncState"

THEMES = ("light", "dark", "system")
PREFERENCE_KEYS = ("theme", "notifications", "language", "fontSize")
LANGUAGES = ("en", "de", "fr", "es", "pt", "ja", "it", "nl")
SENDERS = ("user", "bot")
LOG_OPERATIONS = ("message_sent", "message_received", "login", "logout", "preferences_updated")
AUDIT_OPERATIONS = ("insert", "update", "delete")

#: Conversations migration history: v1 had no counter; v2 added the denormalised
#: ``messageCount``. A half-applied v2 migration leaves documents at v1 without it, or
#: bumped to v2 without the field.
CONVERSATION_SCHEMA_VERSION = 2
CONVERSATION_MIGRATED_FIELD = "messageCount"

def secondary_db_name(db: str) -> str:
    return db + SECONDARY_SUFFIX
