"""OIP v2 binary tensor extension: round trips (ours and tritonclient's) and malformed bodies."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from aiaas.core.errors import InvalidRequest
from aiaas.serving.oip_codec import (
    RequestedOutput,
    Tensor,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)


def _text_tensor(*texts: str, name: str = "text") -> Tensor:
    data = np.empty(len(texts), dtype=object)
    data[:] = [t.encode() for t in texts]
    return Tensor(name, "BYTES", (len(texts),), data)


def _body(header: dict, *chunks: bytes) -> tuple[bytes, int]:
    raw = json.dumps(header).encode()
    return raw + b"".join(chunks), len(raw)


def test_request_round_trip_binary_and_json():
    fp32 = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    inputs = [
        _text_tensor("hello", "wörld", ""),
        Tensor("x", "FP32", (2, 3), fp32),
        Tensor("ids", "INT64", (1, 2), np.array([[1, -2]], dtype=np.int64)),
        Tensor("flags", "BOOL", (2,), np.array([True, False])),
    ]
    for binary in (True, False):
        body, length = encode_request(
            inputs,
            binary=binary,
            request_id="r-1",
            outputs=[RequestedOutput("probabilities", {"binary_data": True})],
        )
        assert (length is None) is (not binary)
        request = decode_request(body, length)
        assert request.id == "r-1"
        assert [t.name for t in request.inputs] == ["text", "x", "ids", "flags"]
        assert list(request.input("text").data) == [b"hello", "wörld".encode(), b""]
        np.testing.assert_array_equal(request.input("x").data, fp32)
        np.testing.assert_array_equal(request.input("ids").data, [[1, -2]])
        np.testing.assert_array_equal(request.input("flags").data, [True, False])
        assert request.wants_binary("probabilities") and not request.wants_binary("embeddings")


def test_json_request_with_nested_data_and_header_as_string():
    body = json.dumps(
        {
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [[1, 2], [3, 4.5]]},
                {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hi"]},
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    request = decode_request(body, str(len(body)))  # a header value arrives as a string
    np.testing.assert_array_equal(request.input("x").data, [[1, 2], [3, 4.5]])
    assert request.input("text").data.tolist() == [b"hi"]
    assert request.wants_binary("anything")
    assert decode_request(body).outputs == []


def test_response_binary_only_where_asked_and_round_trip():
    request = decode_request(
        json.dumps(
            {
                "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["x"]}],
                "outputs": [
                    {"name": "probabilities", "parameters": {"binary_data": True}},
                    {"name": "label"},
                ],
            }
        ).encode()
    )
    probs = np.array([[0.25, 0.75]], dtype=np.float32)
    label = _text_tensor("refund", name="label")
    body, length = encode_response(
        model_name="m",
        model_version="1",
        request=request,
        outputs=[
            Tensor("probabilities", "FP32", (1, 2), probs),
            Tensor("label", label.datatype, (1,), label.data),
        ],
    )
    header = json.loads(body[:length])
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 8}
    assert "data" not in header["outputs"][0]
    assert header["outputs"][1]["data"] == ["refund"]
    assert body[length:] == probs.astype("<f4").tobytes()
    meta, outputs = decode_response(body, length)
    assert meta["model_name"] == "m" and meta["model_version"] == "1"
    np.testing.assert_array_equal(outputs[0].data, probs)
    assert outputs[1].data.tolist() == [b"refund"]
    # Nothing binary: plain JSON and no header length.
    body, length = encode_response(model_name="m", outputs=[Tensor("probabilities", "FP32", (1, 2), probs)])
    assert length is None and json.loads(body)["outputs"][0]["data"] == [0.25, 0.75]


def test_tritonclient_builds_what_we_decode_and_reads_what_we_encode():
    httpclient = pytest.importorskip("tritonclient.http")
    text = httpclient.InferInput("text", [2], "BYTES")
    text.set_data_from_numpy(np.array([b"refund please", "wörld".encode()], dtype=object))
    extra = httpclient.InferInput("x", [2, 2], "FP32")
    extra.set_data_from_numpy(np.eye(2, dtype=np.float32), binary_data=False)
    body, length = httpclient.InferenceServerClient.generate_request_body(
        [text, extra],
        outputs=[
            httpclient.InferRequestedOutput("probabilities", binary_data=True),
            httpclient.InferRequestedOutput("embeddings", binary_data=False),
        ],
        request_id="abc",
    )
    request = decode_request(body, length)
    assert request.id == "abc"
    assert request.input("text").data.tolist() == [b"refund please", "wörld".encode()]
    np.testing.assert_array_equal(request.input("x").data, np.eye(2))
    assert request.wants_binary("probabilities") and not request.wants_binary("embeddings")

    probs = np.array([[0.1, 0.9], [0.6, 0.4]], dtype=np.float32)
    emb = np.array([[0.6, 0.8], [1.0, 0.0]], dtype=np.float32)
    out, out_length = encode_response(
        model_name="m",
        request=request,
        outputs=[Tensor("probabilities", "FP32", (2, 2), probs), Tensor("embeddings", "FP32", (2, 2), emb)],
    )
    result = httpclient.InferenceServerClient.parse_response_body(out, header_length=out_length)
    np.testing.assert_array_equal(result.as_numpy("probabilities"), probs)
    np.testing.assert_allclose(result.as_numpy("embeddings"), emb)
    assert result.get_response()["id"] == "abc"


def _bad(body: bytes, length: int | str | None) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as err:
        decode_request(body, length)
    return err.value


def test_declared_size_beyond_the_body_names_the_input():
    body, length = _body(
        {
            "inputs": [
                {"name": "text", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 50}}
            ]
        },
        struct.pack("<I", 2) + b"hi",
    )
    err = _bad(body, length)
    assert "'text'" in err.message and err.param == "inputs[0].parameters.binary_data_size"


def test_fp32_size_must_match_shape():
    body, length = _body(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3], "parameters": {"binary_data_size": 8}}]},
        b"\0" * 8,
    )
    err = _bad(body, length)
    assert "'x'" in err.message and "12 bytes" in err.message


def test_bytes_element_length_overruns_its_tensor():
    chunk = struct.pack("<I", 100) + b"short"
    body, length = _body(
        {
            "inputs": [
                {
                    "name": "text",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": len(chunk)},
                }
            ]
        },
        chunk,
    )
    err = _bad(body, length)
    assert "'text'" in err.message and "element 0" in err.message


def test_bytes_count_and_leftovers():
    chunk = struct.pack("<I", 1) + b"a" + b"junk"
    body, length = _body(
        {
            "inputs": [
                {
                    "name": "text",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": len(chunk)},
                }
            ]
        },
        chunk,
    )
    assert "left over" in _bad(body, length).message
    # A huge shape over a tiny buffer fails fast instead of looping.
    body, length = _body(
        {
            "inputs": [
                {
                    "name": "text",
                    "datatype": "BYTES",
                    "shape": [10**12],
                    "parameters": {"binary_data_size": 4},
                }
            ]
        },
        b"\0" * 4,
    )
    assert "cannot fit" in _bad(body, length).message


def test_unclaimed_trailing_bytes_and_bad_header_length():
    body, length = _body(
        {"inputs": [{"name": "x", "datatype": "INT32", "shape": [1], "data": [1]}]}, b"extra"
    )
    assert "no input" in _bad(body, length).message
    assert _bad(body, len(body) + 1).param == "Inference-Header-Content-Length"
    assert _bad(body, "-3").param == "Inference-Header-Content-Length"
    assert _bad(body, "twelve").param == "Inference-Header-Content-Length"
    assert _bad(body, 5).code == "invalid_json"  # cut in the middle of the JSON


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        ({"name": "x", "datatype": "FP8", "shape": [1], "data": [1]}, "unsupported datatype"),
        ({"name": "x", "datatype": "FP32", "shape": [-1], "data": [1]}, "non-negative"),
        ({"name": "x", "datatype": "FP32", "shape": [3], "data": [1, 2]}, "needs 3 values"),
        ({"name": "x", "datatype": "INT32", "shape": [1], "data": [1.5]}, "integers"),
        ({"name": "x", "datatype": "UINT8", "shape": [1], "data": [300]}, "out of range"),
        ({"name": "x", "datatype": "FP32", "shape": [1], "data": ["a"]}, "numbers"),
        ({"name": "x", "datatype": "BOOL", "shape": [1], "data": [1]}, "true/false"),
        ({"name": "x", "datatype": "FP32", "shape": [1]}, "neither 'data'"),
        ({"name": "", "datatype": "FP32", "shape": [1], "data": [1]}, "name"),
        (
            {"name": "x", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": -1}},
            "non-negative",
        ),
    ],
)
def test_malformed_inputs(entry, needle):
    body = json.dumps({"inputs": [entry]}).encode()
    err = _bad(body, None)
    assert needle in err.message
    assert err.param and err.param.startswith("inputs[0]")


def test_malformed_documents():
    assert _bad(b"[1, 2]", None).code == "invalid_json"
    assert _bad(b"\xff\xfe", None).code == "invalid_json"
    assert _bad(b'{"inputs": []}', None).param == "inputs"
    dup = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}] * 2}
    assert "twice" in _bad(json.dumps(dup).encode(), None).message
    bad_outputs = {"inputs": dup["inputs"][:1], "outputs": [{"nom": "y"}]}
    assert _bad(json.dumps(bad_outputs).encode(), None).param == "outputs[0]"
