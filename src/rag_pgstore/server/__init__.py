"""An HTTP API over the store: ``rag-pgstore serve``, or :func:`create_app` under any ASGI
server.

>>> from rag_pgstore.server import ApiKey, ServerSettings, create_app
>>> app = create_app(ServerSettings(database_url=url, keys=(ApiKey(secret, "write"),)))

Needs ``pip install 'rag-pgstore[server]'``; see docs/server.md.
"""

from rag_pgstore.server.app import create_app
from rag_pgstore.server.settings import ApiKey, Limits, Scope, ServerSettings

__all__ = ["ApiKey", "Limits", "Scope", "ServerSettings", "create_app"]
