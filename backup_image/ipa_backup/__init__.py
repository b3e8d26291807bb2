"""ipa-backup: PostgreSQL and Redis backup sets in Azure Blob Storage, with verify, restore and drill."""

__version__ = "1.0.0"
