"""Open Inference Protocol v2: JSON bodies and the binary tensor data extension.

With the extension, a body is a JSON header of `Inference-Header-Content-Length` bytes
followed by raw tensors, one per input that carries `parameters.binary_data_size`, in
input order. Fixed-size types are little-endian, row-major; a BYTES element is a
4-byte little-endian length then that many bytes. Responses do the same for outputs
the client asked to receive as binary: all of them with request parameter
`binary_data_output: true`, or one by one with `outputs[i].parameters.binary_data`.

Pure functions over bytes and numpy arrays: no HTTP here. Malformed input raises
InvalidRequest naming the offending input, so a client can fix its request.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aiaas.core.errors import InvalidRequest

HEADER_LENGTH_HEADER = "Inference-Header-Content-Length"

# OIP datatype -> little-endian numpy dtype. BYTES is handled on its own (object arrays of bytes).
DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
BYTES = "BYTES"
_LEN = struct.Struct("<I")


@dataclass(frozen=True)
class Tensor:
    """A named tensor. `data` has `shape`; BYTES data is an object array of `bytes`."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    inputs: list[Tensor]
    outputs: list[RequestedOutput]  # empty: the client wants every output
    parameters: dict[str, Any]

    def input(self, name: str) -> Tensor | None:
        return next((t for t in self.inputs if t.name == name), None)

    def wants_binary(self, output_name: str) -> bool:
        """Per-output `binary_data` wins; else the request-wide `binary_data_output`."""
        for output in self.outputs:
            if output.name == output_name and "binary_data" in output.parameters:
                return bool(output.parameters["binary_data"])
        return bool(self.parameters.get("binary_data_output", False))


# -- requests ---------------------------------------------------------------------------
def parse_header_length(value: str | int | None, body_length: int) -> int | None:
    """Validate the Inference-Header-Content-Length header (None when absent)."""
    if value is None:
        return None
    try:
        length = int(value)
    except (TypeError, ValueError):
        raise InvalidRequest(
            f"{HEADER_LENGTH_HEADER} must be an integer, got {value!r}.", param=HEADER_LENGTH_HEADER
        ) from None
    if length < 0 or length > body_length:
        raise InvalidRequest(
            f"{HEADER_LENGTH_HEADER} is {length} but the body has {body_length} bytes.",
            param=HEADER_LENGTH_HEADER,
        )
    return length


def decode_request(body: bytes, header_length: str | int | None = None) -> InferRequest:
    """Parse an inference request body; binary tensors follow the JSON header when
    `header_length` (the Inference-Header-Content-Length value) is given."""
    body = bytes(body)
    length = parse_header_length(header_length, len(body))
    header = _load_json(body if length is None else body[:length])
    binary = memoryview(body)[len(body) if length is None else length :]
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidRequest("'inputs' must be a non-empty list.", param="inputs")
    inputs: list[Tensor] = []
    offset = 0
    for i, raw in enumerate(raw_inputs):
        tensor, used = _decode_input(raw, i, binary, offset)
        if any(t.name == tensor.name for t in inputs):
            raise InvalidRequest(f"Input '{tensor.name}' appears twice.", param=f"inputs[{i}].name")
        inputs.append(tensor)
        offset += used
    if offset != len(binary):
        raise InvalidRequest(
            f"The body has {len(binary) - offset} bytes of binary data that no input's "
            "binary_data_size accounts for.",
            param=HEADER_LENGTH_HEADER,
        )
    return InferRequest(
        id=_optional_str(header.get("id"), "id"),
        inputs=inputs,
        outputs=_decode_requested_outputs(header.get("outputs")),
        parameters=_parameters(header.get("parameters"), "parameters"),
    )


def encode_request(
    inputs: list[Tensor],
    *,
    outputs: list[RequestedOutput] | None = None,
    binary: bool = True,
    request_id: str | None = None,
    parameters: dict[str, Any] | None = None,
) -> tuple[bytes, int | None]:
    """Build a request body (the SDK's side); returns (body, header length or None for plain JSON)."""
    header: dict[str, Any] = {}
    if request_id is not None:
        header["id"] = request_id
    if parameters:
        header["parameters"] = parameters
    header["inputs"] = []
    if outputs:
        header["outputs"] = [
            {"name": o.name, **({"parameters": o.parameters} if o.parameters else {})} for o in outputs
        ]
    return _encode_tensors(header, "inputs", inputs, [binary] * len(inputs))


# -- responses --------------------------------------------------------------------------
def encode_response(
    *,
    model_name: str,
    outputs: list[Tensor],
    request: InferRequest | None = None,
    model_version: str | None = None,
    request_id: str | None = None,
    parameters: dict[str, Any] | None = None,
) -> tuple[bytes, int | None]:
    """Serialise an inference response. Outputs go binary where `request` asked for it.

    Returns (body, json_header_length); the length is None when nothing is binary, and
    the body is then plain JSON (send it without the Inference-Header-Content-Length header).
    """
    header: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        header["model_version"] = model_version
    rid = request_id if request_id is not None else (request.id if request is not None else None)
    if rid is not None:
        header["id"] = rid
    if parameters:
        header["parameters"] = parameters
    header["outputs"] = []
    as_binary = [request.wants_binary(t.name) if request is not None else False for t in outputs]
    return _encode_tensors(header, "outputs", outputs, as_binary)


def decode_response(
    body: bytes, header_length: str | int | None = None
) -> tuple[dict[str, Any], list[Tensor]]:
    """Parse a response body (the SDK's side): (header without outputs, outputs)."""
    body = bytes(body)
    length = parse_header_length(header_length, len(body))
    header = _load_json(body if length is None else body[:length])
    binary = memoryview(body)[len(body) if length is None else length :]
    raw_outputs = header.pop("outputs", None)
    if not isinstance(raw_outputs, list):
        raise InvalidRequest("'outputs' must be a list.", param="outputs")
    tensors, offset = [], 0
    for i, raw in enumerate(raw_outputs):
        tensor, used = _decode_input(raw, i, binary, offset, kind="outputs")
        tensors.append(tensor)
        offset += used
    return header, tensors


# -- shared helpers ---------------------------------------------------------------------
def _encode_tensors(
    header: dict[str, Any], key: str, tensors: list[Tensor], as_binary: list[bool]
) -> tuple[bytes, int | None]:
    chunks: list[bytes] = []
    for tensor, binary in zip(tensors, as_binary, strict=True):
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        params = dict(tensor.parameters)
        if binary:
            raw = _to_bytes(tensor)
            params["binary_data_size"] = len(raw)
            chunks.append(raw)
        else:
            entry["data"] = _to_json_data(tensor)
        if params:
            entry["parameters"] = params
        header[key].append(entry)
    # NaN/inf are not JSON; OIP clients (tritonclient, kserve) expect them spelled as Python/rapidjson do.
    text = json.dumps(header, separators=(",", ":"), allow_nan=True).encode()
    if not chunks:
        return text, None
    return b"".join([text, *chunks]), len(text)


def _load_json(raw: bytes | memoryview) -> dict[str, Any]:
    try:
        header = json.loads(bytes(raw))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest(f"The request header is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(header, dict):
        raise InvalidRequest("The request must be a JSON object.", code="invalid_json")
    return header


def _optional_str(value: Any, param: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise InvalidRequest(f"'{param}' must be a string.", param=param)


def _parameters(value: Any, param: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest(f"'{param}' must be an object.", param=param)
    return value


def _decode_requested_outputs(raw: Any) -> list[RequestedOutput]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidRequest("'outputs' must be a list.", param="outputs")
    outputs = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidRequest(
                f"outputs[{i}] must be an object with a string 'name'.", param=f"outputs[{i}]"
            )
        outputs.append(
            RequestedOutput(item["name"], _parameters(item.get("parameters"), f"outputs[{i}].parameters"))
        )
    return outputs


def _decode_input(
    raw: Any, i: int, binary: memoryview, offset: int, kind: str = "inputs"
) -> tuple[Tensor, int]:
    """One tensor from its JSON entry (+ its slice of the binary section); returns bytes used."""
    where = f"{kind}[{i}]"
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{where} must be an object.", param=where)
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"{where} needs a non-empty string 'name'.", param=f"{where}.name")
    label = f"{kind[:-1]} '{name}'"
    datatype = raw.get("datatype")
    if not isinstance(datatype, str) or (datatype != BYTES and datatype not in DTYPES):
        raise InvalidRequest(
            f"{label}: unsupported datatype {datatype!r}; use one of {', '.join([*DTYPES, BYTES])}.",
            param=f"{where}.datatype",
        )
    shape = raw.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidRequest(
            f"{label}: 'shape' must be a list of non-negative integers.", param=f"{where}.shape"
        )
    count = math.prod(shape)
    params = _parameters(raw.get("parameters"), f"{where}.parameters")
    size = params.get("binary_data_size")
    if size is None:
        if "data" not in raw:
            raise InvalidRequest(
                f"{label} has neither 'data' nor parameters.binary_data_size.", param=f"{where}.data"
            )
        return Tensor(
            name,
            datatype,
            tuple(shape),
            _from_json_data(raw["data"], datatype, shape, count, label, f"{where}.data"),
            params,
        ), 0
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidRequest(
            f"{label}: binary_data_size must be a non-negative integer.",
            param=f"{where}.parameters.binary_data_size",
        )
    if offset + size > len(binary):
        raise InvalidRequest(
            f"{label} declares {size} bytes of binary data but only {len(binary) - offset} remain "
            "in the body.",
            param=f"{where}.parameters.binary_data_size",
        )
    chunk = binary[offset : offset + size]
    if datatype == BYTES:
        data = _deserialize_bytes(chunk, count, label, f"{where}.parameters.binary_data_size")
    else:
        dtype = DTYPES[datatype]
        if size != count * dtype.itemsize:
            raise InvalidRequest(
                f"{label}: shape {shape} of {datatype} needs {count * dtype.itemsize} bytes, "
                f"binary_data_size is {size}.",
                param=f"{where}.parameters.binary_data_size",
            )
        data = np.frombuffer(chunk, dtype=dtype).reshape(shape)
    return Tensor(name, datatype, tuple(shape), data.reshape(shape), params), size


def _deserialize_bytes(chunk: memoryview, count: int, label: str, param: str) -> np.ndarray:
    # Check the cheap bound first, so a huge declared shape cannot make us loop or allocate.
    if count * _LEN.size > len(chunk):
        raise InvalidRequest(
            f"{label}: {count} BYTES elements cannot fit in {len(chunk)} bytes.", param=param
        )
    items: list[bytes] = []
    pos = 0
    for k in range(count):
        if pos + _LEN.size > len(chunk):
            raise InvalidRequest(
                f"{label}: element {k} has no length prefix (data ends at byte {pos}).", param=param
            )
        (n,) = _LEN.unpack_from(chunk, pos)
        pos += _LEN.size
        if pos + n > len(chunk):
            raise InvalidRequest(
                f"{label}: element {k} declares {n} bytes but only {len(chunk) - pos} remain.", param=param
            )
        items.append(bytes(chunk[pos : pos + n]))
        pos += n
    if pos != len(chunk):
        raise InvalidRequest(
            f"{label}: {len(chunk) - pos} bytes left over after {count} BYTES elements.", param=param
        )
    out = np.empty(count, dtype=object)
    out[:] = items
    return out


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    if all(not isinstance(x, list) for x in data):
        return data
    flat: list[Any] = []
    for x in data:
        flat.extend(_flatten(x))
    return flat


def _from_json_data(
    data: Any, datatype: str, shape: list[int], count: int, label: str, param: str
) -> np.ndarray:
    values = _flatten(data)  # OIP allows nested (row-major) or flat lists
    if len(values) != count:
        raise InvalidRequest(f"{label}: shape {shape} needs {count} values, got {len(values)}.", param=param)
    if datatype == BYTES:
        # Strings only: bytes(300000000) would allocate 300 MB from a 10-byte number.
        if not all(isinstance(v, str) for v in values):
            raise InvalidRequest(f"{label}: BYTES data in JSON must be strings.", param=param)
        out = np.empty(count, dtype=object)
        try:
            out[:] = [v.encode() for v in values]
        except UnicodeEncodeError:
            raise InvalidRequest(f"{label}: BYTES data holds text that is not valid Unicode.", param=param) from None
        return out.reshape(shape)
    if datatype == "BOOL" and not all(isinstance(v, bool) for v in values):
        raise InvalidRequest(f"{label}: BOOL data must be true/false.", param=param)
    if datatype != "BOOL" and not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise InvalidRequest(f"{label}: {datatype} data must be numbers.", param=param)
    if datatype.startswith(("INT", "UINT")) and not all(isinstance(v, int) for v in values):
        raise InvalidRequest(f"{label}: {datatype} data must be integers.", param=param)
    try:
        with np.errstate(over="raise", invalid="raise"):
            array = np.array(values, dtype=DTYPES[datatype])
    except (OverflowError, ValueError, FloatingPointError) as exc:
        raise InvalidRequest(f"{label}: value out of range for {datatype} ({exc}).", param=param) from None
    return array.reshape(shape)


def _to_bytes(tensor: Tensor) -> bytes:
    if tensor.datatype == BYTES:
        parts = []
        for item in np.asarray(tensor.data, dtype=object).reshape(-1):
            raw = item.encode() if isinstance(item, str) else bytes(item)
            parts.append(_LEN.pack(len(raw)))
            parts.append(raw)
        return b"".join(parts)
    return np.ascontiguousarray(tensor.data, dtype=DTYPES[tensor.datatype]).tobytes()


def _to_json_data(tensor: Tensor) -> list[Any]:
    if tensor.datatype == BYTES:
        return [
            item if isinstance(item, str) else bytes(item).decode("utf-8", errors="replace")
            for item in np.asarray(tensor.data, dtype=object).reshape(-1)
        ]
    flat = np.asarray(tensor.data, dtype=DTYPES[tensor.datatype]).reshape(-1)
    return flat.tolist()  # row-major flat list, as OIP allows; FP16 becomes Python floats
