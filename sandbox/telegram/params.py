"""Reading Bot API request parameters the way Telegram does.

Clients send parameters as a query string, ``application/x-www-form-urlencoded`` or
``application/json`` bodies, or ``multipart/form-data`` when uploading files.  In the form
encodings every value is a string: plain strings are sent as they are and everything else
(numbers, booleans, objects, lists) JSON-encoded, which is what python-telegram-bot does.
A file is either a multipart part named like the parameter itself or a part referenced by an
``attach://<name>`` value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import BodyPartReader, web

from .errors import ApiError, bad_request
from .media import MAX_UPLOAD_BYTES

_ATTACH_PREFIX = "attach://"


@dataclass(frozen=True)
class Upload:
    """A file part of a multipart request."""

    field: str
    filename: str | None
    content_type: str | None
    data: bytes


class Params:
    """The parameters of one request, with typed accessors that raise Telegram-style 400s."""

    def __init__(self, values: dict[str, Any], uploads: dict[str, Upload] | None = None) -> None:
        self.values = values
        self.uploads = uploads or {}

    def has(self, name: str) -> bool:
        """Whether the parameter was sent (an upload counts)."""
        return name in self.values or name in self.uploads

    def get_str(self, name: str) -> str | None:
        """Return a string parameter, or ``None`` if it is absent."""
        value = self.values.get(name)
        if value is None:
            return None
        return value if isinstance(value, str) else json.dumps(value)

    def require_str(self, name: str) -> str:
        """Return a string parameter that must be present."""
        value = self.get_str(name)
        if value is None:
            raise bad_request(f"{name} is empty")
        return value

    def get_int(self, name: str) -> int | None:
        """Return an integer parameter, or ``None`` if it is absent."""
        value = self.values.get(name)
        if value is None or value == "":
            return None
        if isinstance(value, bool):
            raise bad_request(f"invalid {name} specified")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise bad_request(f"invalid {name} specified")

    def require_int(self, name: str) -> int:
        """Return an integer parameter that must be present."""
        value = self.get_int(name)
        if value is None:
            raise bad_request(f"{name} is empty")
        return value

    def get_float(self, name: str) -> float | None:
        """Return a numeric parameter as a float, or ``None`` if it is absent."""
        value = self.values.get(name)
        if value is None or value == "":
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise bad_request(f"invalid {name} specified")

    def get_bool(self, name: str, default: bool = False) -> bool:
        """Return a boolean parameter (``true``/``false``/``1``/``0``)."""
        value = self.values.get(name)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return value != 0
        if isinstance(value, str) and value.lower() in ("true", "1", "false", "0", ""):
            return value.lower() in ("true", "1")
        raise bad_request(f"invalid {name} specified")

    def get_json(self, name: str) -> Any:
        """Return a JSON-valued parameter (objects, lists), decoded; ``None`` if absent."""
        value = self.values.get(name)
        if not isinstance(value, str):
            return value
        if value == "":
            return None
        try:
            return json.loads(value)
        except ValueError:
            raise bad_request(f"can't parse {name} JSON object") from None

    def get_chat_ref(self, name: str = "chat_id") -> int | str | None:
        """Return a chat reference: a numeric id or an ``@username``."""
        value = self.values.get(name)
        if isinstance(value, str) and value.startswith("@"):
            return value
        return self.get_int(name)

    def get_file(self, name: str) -> Upload | str | None:
        """Return an uploaded file, or the ``file_id``/URL string sent instead, or ``None``."""
        if name in self.uploads:
            return self.uploads[name]
        value = self.get_str(name)
        if value is None:
            return None
        if value.startswith(_ATTACH_PREFIX):
            upload = self.uploads.get(value.removeprefix(_ATTACH_PREFIX))
            if upload is None:
                raise bad_request("wrong file identifier/HTTP URL specified")
            return upload
        return value

    def public(self) -> dict[str, Any]:
        """Return the non-file parameters, JSON values decoded where they parse."""
        decoded: dict[str, Any] = {}
        for key, value in self.values.items():
            if isinstance(value, str) and value[:1] in ("{", "["):
                try:
                    decoded[key] = json.loads(value)
                    continue
                except ValueError:
                    pass
            decoded[key] = value
        return decoded


async def read_params(request: web.Request) -> Params:
    """Read every parameter of ``request`` (query string plus body)."""
    values: dict[str, Any] = dict(request.query)
    uploads: dict[str, Upload] = {}
    content_type = request.content_type
    if content_type == "multipart/form-data":
        await _read_multipart(request, values, uploads)
    elif request.can_read_body:
        body = await request.read()
        if content_type == "application/json":
            try:
                decoded = json.loads(body or b"{}")
            except ValueError:
                raise bad_request("can't parse JSON request body") from None
            if not isinstance(decoded, dict):
                raise bad_request("JSON request body must be an object")
            values.update(decoded)
        elif body:
            text = body.decode("utf-8", errors="replace")
            values.update(parse_qsl(text, keep_blank_values=True))
    return Params(values, uploads)


async def _read_multipart(
    request: web.Request, values: dict[str, Any], uploads: dict[str, Upload]
) -> None:
    reader = await request.multipart()
    total = 0
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader) or part.name is None:
            continue
        data = await part.read()
        total += len(data)
        if total > MAX_UPLOAD_BYTES:
            raise ApiError(413, "Request Entity Too Large")
        part_type = part.headers.get("Content-Type")
        if part.filename is None and (part_type is None or part_type.startswith("text/plain")):
            values[part.name] = data.decode(part.get_charset("utf-8"), errors="replace")
        else:
            uploads[part.name] = Upload(part.name, part.filename, part_type, bytes(data))
