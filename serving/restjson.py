"""JSON <-> tensors for the REST API, with the rules and messages of TF Serving's json_tensor.cc.

Requests: `{"signature_name": ..., "instances": [...]}` (row format: one entry per batch item,
objects for several named inputs) or `{"inputs": ...}` (columnar: one value, or an object of
named values). String tensors take `{"b64": "..."}` for binary data. Responses mirror the
request: `{"predictions": [...]}` or `{"outputs": ...}`; string outputs whose name ends in
`_bytes` come back as `{"b64": ...}`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re

import numpy as np
import orjson

from serving.errors import Code, ServingError, invalid_argument
from serving.servable import TensorSpec, dtype_name

ROW, COLUMNAR = "row", "columnar"
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
FLOAT_MAX = float(np.finfo(np.float32).max)
# numpy arrays have at most 64 dimensions (TF tensors 254), so no request tensor has more.
MAX_RANK = 64
# orjson parses at most this many levels of nested arrays and objects.
MAX_NESTING = 1024
# Messages quote request JSON as TF Serving does, but only this much of it: TF Serving's
# pretty-printed echo of a deeply nested 2 KB body is megabytes.
MAX_ECHO_CHARS = 400
# Elements of all tensors of one request, checked before they are allocated: decoding costs
# ~50 bytes per element on top of the parsed JSON, whatever the body size limit allows.
DEFAULT_MAX_REQUEST_ELEMENTS = 16 * 1024 * 1024


# ---- helpers that reproduce TF Serving's wording -----------------------------------------------


def json_type(value) -> str:
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


_PRETTY = json.JSONEncoder(indent=4, ensure_ascii=False, allow_nan=True)


def json_text(value, limit: int = MAX_ECHO_CHARS) -> str:
    """A JSON value as TF Serving prints it in messages (rapidjson's pretty writer), cut after
    `limit` characters. The encoder is lazy, so a huge or deep value is never written out."""
    chunks, size = [], 0
    for chunk in _PRETTY.iterencode(value):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return "".join(chunks)[:limit] + f"... (cut at {limit} characters)"
    return "".join(chunks)


def _type_error(value, spec_dtype: int):
    return invalid_argument(
        f"JSON Value: {json_text(value)} Type: {json_type(value)} is not of expected type: "
        f"{dtype_name(spec_dtype)}"
    )


def _format_error(value, text: str):
    return invalid_argument(f"JSON Value: {json_text(value)} {text}")


def _status_text(error) -> str:
    return f"{error.code.name}: {error.message}"


# ---- parsing -------------------------------------------------------------------------------------


def parse_body(body: bytes) -> dict:
    if not body.strip():
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        if "surrogate in string" in error.msg:  # a lone \ud800 escape; rapidjson refuses it too
            raise invalid_argument(
                f"JSON Parse error: The surrogate pair in string is invalid. at offset: {error.pos}"
            ) from None
        if "depth" in error.msg:
            raise _too_deep() from None
        try:  # the json module accepts NaN and Infinity, as TF Serving's parser does
            document = json.loads(body, parse_int=_parse_int, parse_float=_parse_float)
        except json.JSONDecodeError as error:
            raise invalid_argument(
                f"JSON Parse error: {error.msg} at offset: {error.pos}"
            ) from None
        except RecursionError:
            raise _too_deep() from None
        except UnicodeDecodeError as error:
            raise invalid_argument(
                f"JSON Parse error: Invalid encoding in string. at offset: {error.start}"
            ) from None
        _reject_surrogates(document)
    if not isinstance(document, dict):
        raise _format_error(document, "Is not object")
    return document


# ---- integer tensors straight from the body ----------------------------------------------------
#
# A predict body that is only `{"instances": <array>}` or `{"inputs": <array>}` (and maybe a
# "signature_name"), the array a regular nest of JSON integers (what `image.tolist()` sends),
# is read with numpy from the bytes when it holds many lists for its size (a [N, 28, 28, 1]
# batch: one list per pixel): no Python list or int per pixel, and none of the garbage
# collections that so many lists set off. Anything else (floats, booleans, strings, objects,
# an irregular nest, a number JSON refuses, more keys) takes the general path, which also names
# every fault: the fast path only ever answers what the general path answers.

_WS = rb"[ \t\n\r]*"  # JSON's whitespace (regex's \s also takes \v and \f)
_NAME = rb'"signature_name"' + _WS + rb":" + _WS + rb'"([ !#-\[\]-~]*)"'
_FAST_BODY = re.compile(
    _WS + rb"\{" + _WS + rb"(?:" + _NAME + _WS + rb"," + _WS + rb')?"(instances|inputs)"'
    + _WS + rb":" + _WS + rb"(\[[-0-9\[\], \t\n\r]*\])" + _WS
    + rb"(?:," + _WS + _NAME + _WS + rb")?\}" + _WS
)  # fmt: skip
# Byte classes: the characters of a number; brackets and commas (and anything not allowed).
_NUMBER_CHAR = np.zeros(256, dtype=bool)
_NUMBER_CHAR[list(b"0123456789-")] = True
_STRUCTURE_CHAR = ~_NUMBER_CHAR
_STRUCTURE_CHAR[list(b" \t\n\r")] = False
_POWERS_OF_TEN = 10 ** np.arange(19, dtype=np.int64)
# Digits past 18 may not fit in an int64: the general path reads them.
_MAX_DIGITS = 18
# Larger bodies take the general path: past a few hundred images per request parsing is no
# longer what a request costs. The arrays here peak at ~12 bytes per body byte (tracemalloc:
# a body of one-digit numbers, the int64 result included; ~6 for MNIST pixels, was 21-33).
_MAX_FAST_BYTES = 4 * 1024 * 1024
# This reader costs per body byte, orjson's lists cost per list (each one an object, and enough of
# them set off garbage collections): rows of numbers are faster through orjson. Over the wire
# (c=1 p50, the local server, orjson's path / this reader's, 6-8 interleaved rounds): pixels as
# [N, 28, 28] (29 lists in 3.6 KB an image) 0.78x for N=1, 0.81x for 16, 0.74x for 256; as
# [N, 28, 28, 1] (813 lists in 5.1 KB) 0.95x for 1, 1.39x for 4, 2.06x for 16, 3.12x for 256.
_MIN_LISTS_PER_BYTE = 1 / 32


class DenseIntegers:
    """A body's regular nest of JSON integers, read as one int64 array (`parse_predict_body`)."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def as_json(self) -> list:
        """What orjson would have parsed: nested lists of ints."""
        return self.array.tolist()


def parse_predict_body(body: bytes) -> dict:
    """parse_body for a predict request: a nest of integers comes back as DenseIntegers."""
    if len(body) > _MAX_FAST_BYTES or body.count(b"[") < len(body) * _MIN_LISTS_PER_BYTE:
        return parse_body(body)
    match = _FAST_BODY.fullmatch(body)
    if match is not None and not (match[1] is not None and match[4] is not None):
        array = _dense_integers(match[3])
        if array is not None:
            document: dict = {}
            if match[1] is not None:
                document["signature_name"] = match[1].decode("ascii")
            document[match[2].decode("ascii")] = DenseIntegers(array)
            if match[4] is not None:
                document["signature_name"] = match[4].decode("ascii")
            return document
    return parse_body(body)


def _dense_integers(text: bytes) -> np.ndarray | None:
    """`text` (brackets, commas, digits, '-', JSON spaces only) as an int64 array, or None
    unless it is a non-empty regular nest of valid JSON integers of at most 18 digits."""
    chars = np.frombuffer(text, dtype=np.uint8)
    number = _NUMBER_CHAR[chars]
    # The text opens with '[' and closes with ']', so every number starts and ends inside.
    # Offsets as int32 (a fast body is at most _MAX_FAST_BYTES): half of int64's memory.
    starts = np.flatnonzero(number[1:] > number[:-1]).astype(np.int32) + 1
    ends = np.flatnonzero(number[:-1] > number[1:]).astype(np.int32) + 1
    if not starts.size:
        return None
    minus = chars[starts] == 0x2D
    first = starts + minus  # each number's first digit
    lengths = ends - first
    if (
        np.count_nonzero(chars == 0x2D) != np.count_nonzero(minus)  # a '-' inside a number
        or lengths.min() < 1  # a '-' with no digit after it
        or lengths.max() > _MAX_DIGITS
        or ((chars[first] == 0x30) & (lengths > 1)).any()  # a leading zero: not JSON
    ):
        return None
    lengths = lengths.astype(np.uint8)  # at most _MAX_DIGITS now
    del first
    # The structure: every number as one 'n' between brackets and commas, spaces dropped.
    keep = _STRUCTURE_CHAR[chars]
    keep[starts] = True
    skeleton = np.where(number, np.uint8(0x6E), chars)[keep].tobytes()
    shape = _regular_shape(skeleton)
    if shape is None or math.prod(shape) != starts.size:
        return None
    del keep, number
    # Each number's value, one decimal place at a time from its end: arrays of one entry per
    # number, not per digit (a per-digit int64 array costs 8 bytes per body byte each).
    totals = np.zeros(starts.size, dtype=np.int64)
    index = ends - 1
    for place in range(int(lengths.max())):
        digits = chars[index].astype(np.int64) - 0x30
        digits[lengths <= place] = 0  # that number has no digit this far from its end
        digits *= _POWERS_OF_TEN[place]
        totals += digits
        del digits
        index -= 1
    totals[minus] *= -1
    return totals.reshape(shape)


def _regular_shape(skeleton: bytes) -> list[int] | None:
    """The shape of a regular nest written as brackets, commas and 'n' leaves, or None."""
    rank = len(skeleton) - len(skeleton.lstrip(b"["))
    if rank == 0 or rank > MAX_RANK:
        return None
    shape: list[int] = []
    block = b"n"
    for level in range(rank, 0, -1):  # innermost first
        # The first list at this depth ends where a run of `closing` brackets starts: the
        # lists inside it close with shorter runs, if the nest is regular.
        closing = rank - level + 1
        end = skeleton.find(b"]" * closing, level - 1)
        if end < 0:
            return None
        opened = skeleton[level - 1 : end + closing]
        count = (len(opened) - 1) // (len(block) + 1)
        if count < 1 or opened != b"[" + b",".join([block] * count) + b"]":
            return None
        shape.insert(0, count)
        block = opened
    return shape if block == skeleton else None


def _too_deep() -> ServingError:
    return invalid_argument(
        f"JSON Parse error: Nesting is too deep: more than {MAX_NESTING} levels of arrays and "
        "objects (the local server's limit)"
    )


def _parse_int(text: str):
    """Integers as rapidjson reads them: past 64 bits a double. int() alone would refuse more
    than 4300 digits with a ValueError."""
    if len(text.lstrip("-")) <= 20:
        value = int(text)
        if INT64_MIN <= value <= 2**64 - 1:
            return value
    return _parse_float(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise invalid_argument("JSON Parse error: Number too big to be stored in double")
    return value


def _reject_surrogates(document) -> None:
    """Lone surrogates (`"\\ud800"`), which json accepts and orjson and rapidjson do not."""
    stack = [document]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value)
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str) and not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise invalid_argument(
                    "JSON Parse error: The surrogate pair in string is invalid."
                ) from None


def signature_name(document: dict) -> str:
    name = document.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid_argument(
            f"JSON Value: {json_text(document)} not formatted correctly. 'signature_name' key "
            "must be a string value."
        )
    return name


def _is_b64(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _decode_b64(value) -> bytes:
    if not _is_b64(value):
        raise invalid_argument(
            f"JSON Value: {json_text(value)} not formatted correctly for base64 data"
        )
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, ValueError):
        try:  # TF Serving (absl) also accepts web-safe and unpadded base64
            text = value["b64"].replace("-", "+").replace("_", "/")
            return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise invalid_argument("Unable to base64 decode") from None


class LimitExceeded(ServingError):
    """A request past one of the local server's limits (TF Serving has other limits or none)."""

    def __init__(self, message: str) -> None:
        super().__init__(Code.INVALID_ARGUMENT, message)


class ElementBudget:
    """Tensor elements that one request may still decode.

    no_booleans: the request's body holds neither `true` nor `false`, so a list that numpy
    reads as integers or floats holds no JSON booleans either (numpy would read them as 1 and
    0) and can be converted in one call, without a type check per value.
    """

    def __init__(
        self, limit: int = DEFAULT_MAX_REQUEST_ELEMENTS, no_booleans: bool = False
    ) -> None:
        self.limit = limit
        self.used = 0
        self.no_booleans = no_booleans

    def take(self, count: int) -> None:
        if self.limit > 0 and self.used + count > self.limit:
            raise LimitExceeded(
                f"Request has at least {self.used + count} tensor elements, more than the local "
                f"server's limit of {self.limit} (--max_request_elements); send fewer instances "
                "per request"
            )
        self.used += count


def _dense_shape(value, max_rank: int = MAX_RANK) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if len(shape) > max_rank:
            raise LimitExceeded(
                f"JSON list nests more than {max_rank} levels deep: tensors here have at most "
                f"{MAX_RANK} dimensions (a row of 'instances' at most {MAX_RANK - 1})"
            )
        if not value:
            break
        value = value[0]
    return shape


def _convert_scalar(value, spec: TensorSpec):
    """One JSON scalar to a Python value of the spec's dtype (TF Serving's AddValueToTensor)."""
    kind = spec.dtype.kind
    if spec.dtype == object:
        if isinstance(value, dict):
            return _decode_b64(value)
        if not isinstance(value, str):
            raise _type_error(value, spec.dtype_enum)
        return value.encode("utf-8")
    if isinstance(value, dict):
        raise _type_error(value, spec.dtype_enum)
    if kind == "b":
        if not isinstance(value, bool):
            raise _type_error(value, spec.dtype_enum)
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _type_error(value, spec.dtype_enum)
    if kind == "f":
        if spec.dtype == np.float32 and math.isfinite(value):
            lossy = (abs(value) > 2**24 - 1) if isinstance(value, int) else abs(value) > FLOAT_MAX
            if lossy:
                raise invalid_argument(
                    f"Cannot convert JSON value: {json_text(value)} to float without loss of "
                    "precision."
                )
        return float(value)
    if not isinstance(value, int):
        raise _type_error(value, spec.dtype_enum)
    low, high = _int_range(spec)
    if not low <= value <= high:
        raise _type_error(value, spec.dtype_enum)
    return value


def _int_range(spec: TensorSpec) -> tuple[int, int]:
    name = spec.dtype.name
    if name == "int64":
        return INT64_MIN, INT64_MAX
    if name == "uint32":
        return 0, 2**32 - 1
    if name == "uint64":
        return 0, 2**64 - 1
    return INT32_MIN, INT32_MAX  # int32, int16, int8, uint8 are read as JSON int32


def _fill(value, level: int, shape: list[int], spec: TensorSpec, out: list) -> None:
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise invalid_argument(
                f"JSON Value: {json_text(value)} found at incorrect level: {level + 1} in the "
                f"JSON DOM. Expected at level: {rank}"
            )
        out.append(_convert_scalar(value, spec))
        return
    if level >= rank:
        raise invalid_argument(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise invalid_argument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} expected "
            f"size: {shape[level]}"
        )
    for item in value:
        _fill(item, level + 1, shape, spec, out)


_FAST_TYPES = {"i": {int}, "u": {int}, "f": {int, float}, "b": {bool}, "O": {str}}


def _integers(values, spec: TensorSpec) -> np.ndarray:
    """Python ints (already within _int_range) as the spec's integer dtype. Types narrower
    than the JSON int32 they are read as wrap around (-1 -> 255 for uint8), as a TensorProto's
    int_val does in TF Serving."""
    wide = np.uint64 if spec.dtype == np.uint64 else np.int64
    return np.array(values, dtype=wide).astype(spec.dtype)


def decode_tensor(
    value, spec: TensorSpec, budget: ElementBudget | None = None, max_rank: int = MAX_RANK
) -> np.ndarray:
    """A (nested) JSON value to an array of the spec's dtype, or TF Serving's error."""
    shape = _dense_shape(value, max_rank)
    if budget is not None:
        budget.take(math.prod(shape))
        if budget.no_booleans and spec.dtype.kind in "iuf":
            numbers = _plain_numbers(value, spec, shape)
            if numbers is not None:
                return numbers
    # Fast path: a regular nested list of the right scalar types.
    try:
        objects = np.array(value, dtype=object)
    except ValueError:
        objects = None
    if objects is not None and list(objects.shape) == shape:
        flat = objects.ravel()
        types = set(map(type, flat))
        if types <= _FAST_TYPES.get(spec.dtype.kind, set()):
            if spec.dtype == object:
                return np.array([s.encode("utf-8") for s in flat], dtype=object).reshape(shape)
            if spec.dtype.kind in "iu":
                low, high = _int_range(spec)
                # Out-of-range values fall through to the slow path, which names them.
                if not flat.size or (low <= min(flat) and max(flat) <= high):
                    return _integers(flat.tolist(), spec).reshape(shape)
            elif spec.dtype.kind == "f":
                numbers = np.array(flat.tolist(), dtype=np.float64)
                if spec.dtype != np.float32 or _lossless_float32(flat, numbers):
                    return numbers.astype(spec.dtype).reshape(shape)
            else:
                return np.array(flat.tolist(), dtype=spec.dtype).reshape(shape)
    values: list = []
    _fill(value, 0, shape, spec, values)
    if spec.dtype.kind in "iu":
        return _integers(values, spec).reshape(shape)
    return np.array(values, dtype=spec.dtype).reshape(shape)


def _plain_numbers(value, spec: TensorSpec, shape: list[int]) -> np.ndarray | None:
    """A regular nested list of JSON numbers (no booleans) as the spec's dtype, converted by
    numpy in one call; None whenever the per-value path must decide (an irregular list,
    strings, a value out of range or not exactly representable), which then names the fault.

    Pixels cost ~10 ns each here, against ~250 ns through Python objects per value."""
    try:
        array = np.array(value)
    except (ValueError, TypeError, OverflowError):
        return None
    if list(array.shape) != shape or array.dtype.kind not in "if" or array.dtype.itemsize != 8:
        return None
    return _checked_numbers(array, spec)


def _checked_numbers(array: np.ndarray, spec: TensorSpec) -> np.ndarray | None:
    """An int64 or float64 array of JSON numbers as the spec's dtype, or None where the
    per-value path must decide (out of range, not exactly representable)."""
    if not array.size:
        return array.astype(spec.dtype)
    if spec.dtype.kind in "iu":
        low, high = _int_range(spec)
        if array.dtype.kind != "i" or array.min() < low or array.max() > high:
            return None  # floats for an integer input, or out of range: the slow path's error
        return array.astype(spec.dtype)  # narrower types wrap around, as _integers does
    if spec.dtype == np.float32:
        if array.dtype.kind == "i":
            # Not np.abs: the absolute value of int64's minimum wraps around to itself.
            if array.min() < -(2**24 - 1) or array.max() > 2**24 - 1:
                return None
        else:
            magnitude = np.abs(array)
            finite = magnitude[np.isfinite(magnitude)]
            # An integral value past 2**24 may have been a JSON integer, which float32 cannot
            # hold exactly: the per-value path tells integers from floats.
            if finite.size and (
                finite.max() > FLOAT_MAX
                or np.any((finite > 2**24 - 1) & (finite == np.floor(finite)))
            ):
                return None
    return array.astype(spec.dtype)


def _lossless_float32(flat: np.ndarray, numbers: np.ndarray) -> bool:
    finite = np.isfinite(numbers)
    if np.any(np.abs(numbers[finite]) > FLOAT_MAX):
        return False
    integers = [v for v in flat if type(v) is int]
    return all(abs(v) <= 2**24 - 1 for v in integers)


def decode_predict(
    document: dict,
    specs: dict[str, TensorSpec],
    max_elements: int = DEFAULT_MAX_REQUEST_ELEMENTS,
    body: bytes | None = None,
) -> tuple[dict, str]:
    """Inputs of a predict request body and its format (ROW or COLUMNAR).

    body: the raw JSON `document` was parsed from; without `true` and `false` in it, numeric
    tensors take numpy's one-call conversion."""
    no_booleans = body is not None and b"true" not in body and b"false" not in body
    budget = ElementBudget(max_elements, no_booleans)
    if not specs:
        raise invalid_argument("Failed to get input map for signature: DEFAULT")
    for key in ("instances", "inputs"):
        dense = document.get(key)
        if isinstance(dense, DenseIntegers):
            if len(specs) == 1:
                ((name, spec),) = specs.items()
                if spec.dtype.kind in "iuf":
                    budget.take(dense.array.size)
                    array = _checked_numbers(dense.array, spec)
                    if array is not None:
                        return {name: array}, ROW if key == "instances" else COLUMNAR
                    budget.used = 0
            document = {**document, key: dense.as_json()}  # the general path decides
    has_instances, has_inputs = "instances" in document, "inputs" in document
    if has_instances and has_inputs:
        raise _format_error(
            document,
            "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist ",
        )
    if has_instances:
        return _decode_instances(document, specs, budget), ROW
    if has_inputs:
        return _decode_inputs(document["inputs"], specs, budget), COLUMNAR
    raise invalid_argument("Missing 'inputs' or 'instances' key")


def _decode_instances(document: dict, specs: dict[str, TensorSpec], budget: ElementBudget) -> dict:
    instances = document["instances"]
    if not isinstance(instances, list):
        raise _format_error(document, "Excepting 'instances' to be an list/array")
    if not instances:
        raise _format_error(document, "No values in 'instances' array")

    def is_object(value) -> bool:
        return isinstance(value, dict) and not _is_b64(value)

    if not isinstance(instances[0], dict) and len(specs) > 1:
        raise invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map"
        )
    if not is_object(instances[0]):
        ((name, spec),) = specs.items()
        # Fast path: the whole list is one regular tensor with the batch as 0th dimension.
        try:
            return {name: _decode_regular(instances, spec, budget)}
        except _Irregular:
            pass
    columns: dict[str, list] = {name: [] for name in specs}
    shapes: dict[str, list[int]] = {}
    for index, element in enumerate(instances):
        if is_object(instances[0]):
            if not is_object(element):
                raise invalid_argument(
                    f"Expecting object but got list at item {index} of input list"
                )
            for name, value in element.items():
                try:
                    _add_instance_item(value, name, specs, columns, shapes, budget)
                except LimitExceeded:
                    raise
                except ServingError as error:
                    raise invalid_argument(
                        f"Failed to process element: {index} key: {name} of 'instances' list. "
                        f"Error: {_status_text(error)}"
                    ) from None
            if set(element) != set(specs):
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{json_text(element)} must only have keys: {','.join(sorted(specs))}"
                )
        else:
            if is_object(element):
                raise invalid_argument(
                    f"Expecting value/list but got object at item {index} of input list"
                )
            name = next(iter(specs))
            try:
                _add_instance_item(element, name, specs, columns, shapes, budget)
            except LimitExceeded:
                raise
            except ServingError as error:
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. Error: "
                    f"{_status_text(error)}"
                ) from None
    return {name: np.stack(items) for name, items in columns.items() if items}


class _Irregular(Exception):
    pass


def _decode_regular(value, spec: TensorSpec, budget: ElementBudget) -> np.ndarray:
    used = budget.used
    try:
        array = decode_tensor(value, spec, budget)
    except LimitExceeded:
        raise
    except Exception as error:
        budget.used = used  # the element-by-element path counts them again
        raise _Irregular from error
    return array


def _add_instance_item(value, name, specs, columns, shapes, budget: ElementBudget) -> None:
    if name not in specs:
        raise invalid_argument(f"JSON object: does not have named input: {name}")
    # np.stack adds the batch dimension.
    array = decode_tensor(value, specs[name], budget, max_rank=MAX_RANK - 1)
    shape = list(array.shape)
    if name not in shapes:
        shapes[name] = shape
    elif int(np.prod(shapes[name])) != array.size:
        raise invalid_argument(
            f"Expecting tensor size: {int(np.prod(shapes[name]))} but got: {array.size}"
        )
    elif shapes[name] != shape:
        raise invalid_argument(
            f"Expecting shape [{','.join(map(str, shapes[name]))}] but got: "
            f"[{','.join(map(str, shape))}]"
        )
    columns[name].append(array)


def _decode_inputs(value, specs: dict[str, TensorSpec], budget: ElementBudget) -> dict:
    if not isinstance(value, dict) or _is_b64(value):
        if len(specs) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        ((name, spec),) = specs.items()
        return {name: decode_tensor(value, spec, budget)}
    tensors = {}
    for name, spec in specs.items():
        if name not in value:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        tensors[name] = decode_tensor(value[name], spec, budget)
    return tensors


# ---- responses -----------------------------------------------------------------------------------


def _jsonable(array: np.ndarray, as_bytes: bool):
    """Something orjson can write: numeric arrays stay numpy, strings become str or b64."""
    if array.dtype != object and array.dtype.kind not in "SU":
        return np.ascontiguousarray(array)

    def convert(item):
        if isinstance(item, list):
            return [convert(i) for i in item]
        data = item if isinstance(item, bytes) else str(item).encode("utf-8")
        if as_bytes:
            return {"b64": base64.b64encode(data).decode("ascii")}
        return data.decode("utf-8", "replace")

    return convert(array.tolist())


def _dumps(value) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


def encode_predict(outputs: dict[str, np.ndarray], response_format: str) -> bytes:
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    if response_format == COLUMNAR:
        converted = {n: _jsonable(outputs[n], n.endswith("_bytes")) for n in names}
        body = converted[names[0]] if len(names) == 1 else converted
        return _dumps({"outputs": body})
    batch = 0
    for name in names:
        array = outputs[name]
        if array.ndim == 0:
            raise invalid_argument(f"Tensor name: {name} has no shape information ")
        if array.shape[0] < 1:
            raise invalid_argument(f"Tensor name: {name} has invalid batch size: {array.shape[0]}")
        if batch and array.shape[0] != batch:
            raise invalid_argument(
                f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} "
                f"expecting: {batch}"
            )
        batch = array.shape[0]
    converted = {n: _jsonable(outputs[n], n.endswith("_bytes")) for n in names}
    if len(names) == 1:
        return _dumps({"predictions": converted[names[0]]})
    rows = [{n: converted[n][i] for n in names} for i in range(batch)]
    return _dumps({"predictions": rows})


def encode_classify(classifications: list[list[tuple[str, float]]]) -> bytes:
    if not classifications:
        raise invalid_argument("Cannot convert empty ClassificationResults to JSON")
    results = [[[label, np.float32(score)] for label, score in row] for row in classifications]
    return _dumps({"results": results})


def encode_regress(values: list[float]) -> bytes:
    if not values:
        raise invalid_argument("Cannot convert empty RegressionResults to JSON")
    return _dumps({"results": np.array(values, dtype=np.float32)})


# ---- classify / regress requests ---------------------------------------------------------------


def decode_examples(document: dict) -> list[bytes]:
    """Serialized tf.Examples of a classify/regress body (`context` merged into each)."""
    from tensorflow.core.example import example_pb2

    context = None
    if "context" in document:
        context = _example_from_json(document["context"], example_pb2)
    if "examples" not in document:
        raise _format_error(
            document, "When method is classify, key 'examples' is expected and was not found"
        )
    examples = document["examples"]
    if not isinstance(examples, list):
        raise _format_error(document, "Expecting 'examples' value to be an list/array")
    if not examples:
        raise _format_error(document, "'examples' value is an empty array")
    serialized = []
    for item in examples:
        example = _example_from_json(item, example_pb2)
        if context is not None:
            merged = example_pb2.Example()
            merged.CopyFrom(context)
            merged.MergeFrom(example)
            example = merged
        serialized.append(example.SerializeToString())
    return serialized


def _example_from_json(value, example_pb2):
    if not isinstance(value, dict):
        raise invalid_argument(f"Example must be JSON object but got JSON {json_type(value)}")
    example = example_pb2.Example()
    for name, content in value.items():
        feature = example.features.feature[name]
        for item in content if isinstance(content, list) else [content]:
            _add_feature_value(item, name, feature)
    return example


def _add_feature_value(value, name: str, feature) -> None:
    kind = feature.WhichOneof("kind")

    def require(expected: str) -> None:
        if kind is not None and kind != expected:
            readable = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}
            raise invalid_argument(
                f"Unexpected element type in feature: {name} expecting type: {readable[kind]}"
            )

    if value is None or isinstance(value, list) or (isinstance(value, dict) and not _is_b64(value)):
        raise invalid_argument(
            f"Feature: {name} has element with unexpected JSON type: {json_type(value)}"
        )
    if isinstance(value, bool):
        require("int64_list")
        feature.int64_list.value.append(int(value))
    elif isinstance(value, dict):
        require("bytes_list")
        feature.bytes_list.value.append(_decode_b64(value))
    elif isinstance(value, str):
        require("bytes_list")
        feature.bytes_list.value.append(value.encode("utf-8"))
    elif isinstance(value, float):
        require("float_list")
        if math.isfinite(value) and abs(value) > FLOAT_MAX:
            raise invalid_argument(
                f"Cannot convert JSON value: {json_text(value)} to float without loss of precision."
            )
        feature.float_list.value.append(value)
    else:
        require("int64_list")
        if value > INT64_MAX:
            raise invalid_argument(f"Feature: {name} has uint64 element. Only int64 is supported.")
        feature.int64_list.value.append(value)
