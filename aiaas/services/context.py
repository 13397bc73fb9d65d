"""What a use case needs from the running application, as a structural type: the API's AppState (and the
console's, which is the same object) fits it without the services importing the API layer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from aiaas.core.settings import Settings
    from aiaas.services.inference import InferenceService
    from aiaas.store.db import Database
    from aiaas.store.encrypted import EncryptedBlobStore


class AppServices(Protocol):
    @property
    def blobs(self) -> EncryptedBlobStore: ...

    @property
    def inference(self) -> InferenceService: ...


class AppContext(Protocol):
    @property
    def settings(self) -> Settings: ...

    @property
    def db(self) -> Database: ...

    @property
    def services(self) -> AppServices: ...
