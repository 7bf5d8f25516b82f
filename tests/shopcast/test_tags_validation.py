"""Tag bodies: every 422 rule of ``validate``, the cue point shapes, and no other failure mode."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shopcast.tags import MAX_DURATION, MAX_PAYLOAD, TagError, TagRequest, cue_point_body, validate

PRODUCT = {"kind": "product", "product_id": "sku-123"}


def refused(body: Any) -> TagError:
    with pytest.raises(TagError) as info:
        validate(body)
    assert info.value.status == 422
    assert info.value.code == "invalid"
    assert info.value.message
    return info.value


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# -- accepted bodies ------------------------------------------------------------------------


def test_minimal_product_pin() -> None:
    req = validate(PRODUCT)
    assert req == TagRequest("product", "sku-123", {}, None, None)


def test_full_product_with_data_duration_and_pts() -> None:
    req = validate({**PRODUCT, "data": {"title": "Shoe", "price": 89.5}, "duration": 30, "at": 0})
    assert req.data == {"title": "Shoe", "price": 89.5}
    assert req.duration == 30
    assert req.at == 0 and isinstance(req.at, int)


def test_at_as_date_time_is_epoch_seconds() -> None:
    req = validate({**PRODUCT, "at": "2026-11-21T10:00:00.250Z"})
    assert isinstance(req.at, float)
    assert req.at == pytest.approx(epoch("2026-11-21T10:00:00.250Z"))
    offset = validate({**PRODUCT, "at": "2026-11-21T11:00:00.250+01:00"})
    assert offset.at == pytest.approx(req.at)


def test_deal_with_duration_or_end() -> None:
    assert validate({"kind": "deal", "duration": 60}).duration == 60
    req = validate({"kind": "deal", "end": "2026-11-21T10:05:00Z"})
    assert req.kind == "deal" and req.product_id is None


def test_poll_with_question_and_options() -> None:
    for n in (2, 10):
        data = {"question": "Which colour?", "options": [f"o{i}" for i in range(n)]}
        assert validate({"kind": "poll", "data": data}).data == data


def test_duration_bounds_are_inclusive_at_the_top() -> None:
    assert validate({**PRODUCT, "duration": MAX_DURATION}).duration == MAX_DURATION
    assert validate({**PRODUCT, "duration": 0.001}).duration == 0.001


def test_data_at_exactly_the_limit() -> None:
    overhead = len(json.dumps({"x": ""}, separators=(",", ":")))
    data = {"x": "a" * (MAX_PAYLOAD - overhead)}
    assert validate({**PRODUCT, "data": data}).data == data


def test_product_id_limits() -> None:
    assert validate({"kind": "product", "product_id": "x" * 128}).product_id == "x" * 128
    assert validate({"kind": "product", "product_id": "ünï-€"}).product_id == "ünï-€"
    assert validate({"kind": "deal", "product_id": "sku-1", "duration": 5}).product_id == "sku-1"


# -- every 422 rule ---------------------------------------------------------------------------


@pytest.mark.parametrize("body", [None, [], "product", 7, 1.5, True, [PRODUCT]])
def test_body_must_be_an_object(body: Any) -> None:
    assert "JSON object" in refused(body).message


@pytest.mark.parametrize("extra", ["foo", "id", "pts", "stream_id", "Kind", "source"])
def test_unknown_fields(extra: str) -> None:
    assert extra in refused({**PRODUCT, extra: 1}).message


@pytest.mark.parametrize(
    "kind", [None, "", "PRODUCT", "banner", "com.apple.hls.interstitial", 1, True, [], {}]
)
def test_kind(kind: Any) -> None:
    body = {**PRODUCT, "kind": kind}
    if kind is None:
        del body["kind"]
    assert "kind" in refused(body).message


@pytest.mark.parametrize(
    "product_id",
    ["", "x" * 129, 'a"b', "a\nb", "a\rb", 123, 1.5, True, ["sku"], {"id": "sku"}, "\ud800"],
)
def test_product_id_rules(product_id: Any) -> None:
    assert "product_id" in refused({"kind": "product", "product_id": product_id}).message


def test_product_needs_a_product_id() -> None:
    assert "product_id" in refused({"kind": "product"}).message
    assert "product_id" in refused({"kind": "product", "product_id": None}).message


@pytest.mark.parametrize("data", [[], "text", 5, True, [{"a": 1}]])
def test_data_must_be_an_object(data: Any) -> None:
    assert "data" in refused({**PRODUCT, "data": data}).message


def test_data_over_8_kb() -> None:
    overhead = len(json.dumps({"x": ""}, separators=(",", ":")))
    assert "8192" in refused({**PRODUCT, "data": {"x": "a" * (MAX_PAYLOAD - overhead + 1)}}).message
    # Counted in UTF-8 bytes, not characters.
    assert "8192" in refused({**PRODUCT, "data": {"x": "€" * 2731}}).message


@pytest.mark.parametrize(
    "data", [{"x": float("nan")}, {"x": [float("inf")]}, {"x": "\udc80"}, {"\ud83d": 1}]
)
def test_data_that_cannot_be_valid_json_text(data: Any) -> None:
    """NaN/Infinity (Python's json accepts them) and lone surrogates (a JSON escape can carry
    them) cannot be stored, rendered as ID3 UTF-8 or returned as standard JSON."""
    assert "data" in refused({**PRODUCT, "data": data}).message


@pytest.mark.parametrize(
    "duration",
    [0, -1, -0.5, 0.0, MAX_DURATION + 0.001, 10**9, True, False, "30", [30], {}, float("nan")],
)
def test_duration_range_and_type(duration: Any) -> None:
    assert "duration" in refused({**PRODUCT, "duration": duration}).message


def test_whole_float_at_is_a_pts() -> None:
    # JSON (and the OpenAPI integer type) does not tell 12 from 12.0.
    assert validate({**PRODUCT, "at": 12.0}).at == 12


@pytest.mark.parametrize(
    "at",
    [
        -1,
        1.5,
        -3.0,
        True,
        False,
        [0],
        {"pts": 0},
        "",
        "yesterday",
        "2026-11-21T10:00:00",  # no zone: ambiguous
        "2026-13-01T00:00:00Z",
        "1700000000",
    ],
)
def test_at_forms(at: Any) -> None:
    err = refused({**PRODUCT, "at": at})
    assert "at" in err.message or "date-time" in err.message


@pytest.mark.parametrize("end", [5, 5.0, True, ["2026-11-21T10:00:00Z"], "soon", "2026-11-21"])
def test_end_must_be_a_zoned_date_time(end: Any) -> None:
    message = refused({"kind": "deal", "end": end}).message
    assert "end" in message or "date-time" in message


@pytest.mark.parametrize(
    "end", ["1969-12-31T23:59:59Z", "1970-01-01T00:00:00Z", "0001-01-01T00:00:00Z"]
)
def test_end_is_checked_against_the_frame_not_here(end: str) -> None:
    """Only the format is validated up front: a well-formed past end is a request whose
    "end must come after the tagged frame" refusal comes once the stream is known live
    (so an offline stream still answers 409, as the OpenAPI contract promises)."""
    req = validate({"kind": "deal", "end": end})
    assert req.end is not None and req.end <= 0


def test_end_excludes_duration() -> None:
    assert (
        "not both"
        in refused({"kind": "deal", "duration": 5, "end": "2026-11-21T10:00:00Z"}).message
    )


@pytest.mark.parametrize("extra", [{}, {"duration": None}, {"end": None}])
def test_deal_needs_duration_or_end(extra: dict[str, Any]) -> None:
    assert "deal" in refused({"kind": "deal", "product_id": "sku-1", **extra}).message


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"question": "Q?"},
        {"options": ["a", "b"]},
        {"question": 5, "options": ["a", "b"]},
        {"question": "Q?", "options": ["a"]},
        {"question": "Q?", "options": [str(i) for i in range(11)]},
        {"question": "Q?", "options": "a,b"},
        {"question": "Q?", "options": {"a": 1, "b": 2}},
        {"question": None, "options": ["a", "b"]},
    ],
)
def test_poll_needs_question_and_2_to_10_options(data: dict[str, Any]) -> None:
    assert "poll" in refused({"kind": "poll", "data": data}).message


# -- any JSON value: a TagRequest or a 422, never anything else ---------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(st.characters(), max_size=20)  # includes lone surrogates (JSON escapes allow them)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=30,
)
FIELDS = ["kind", "product_id", "data", "duration", "end", "at"]
near_valid = {
    "kind": st.sampled_from(["product", "deal", "poll", "x"]) | json_values,
    "product_id": st.text(max_size=140) | json_values,
    "data": st.fixed_dictionaries(
        {}, optional={"question": json_values, "options": json_values, "title": json_values}
    )
    | json_values,
    "duration": st.floats() | st.integers() | json_values,
    "end": st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat())
    | st.text(max_size=30)
    | json_values,
    "at": st.integers(min_value=-5, max_value=2**64)
    | st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat())
    | json_values,
}
bodies = (
    json_values
    | st.fixed_dictionaries({}, optional=near_valid)
    | st.dictionaries(st.sampled_from([*FIELDS, "extra"]), json_values, max_size=7)
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies)
def test_any_json_value_is_accepted_or_refused_with_422(body: Any) -> None:
    try:
        req = validate(body)
    except TagError as exc:
        assert exc.status == 422
        assert isinstance(exc.message, str) and exc.message
        return
    # What passes is storable and renderable: standard JSON, UTF-8, the documented shapes.
    assert isinstance(body, dict) and set(body) <= set(FIELDS)
    assert req.kind in ("product", "deal", "poll")
    json.dumps(req.data, allow_nan=False, ensure_ascii=False).encode()
    if req.product_id is not None:
        req.product_id.encode()
    if req.kind == "product":
        assert req.product_id
    if req.kind == "deal":
        assert req.duration is not None or req.end is not None
    if req.duration is not None:
        assert 0 < req.duration <= MAX_DURATION
    if req.end is not None:  # a finite epoch time; whether it follows the frame is checked live
        assert isinstance(req.end, float) and math.isfinite(req.end)


# -- cue points -----------------------------------------------------------------------------


def test_on_cue_point_parameters() -> None:
    args = (
        {
            "name": "shopcast",
            "time": 3.0,
            "type": "event",
            "parameters": {"kind": "product", "product_id": "sku-9", "data": '{"title":"x"}'},
        },
    )
    body = cue_point_body("onCuePoint", args)
    assert body == {"kind": "product", "product_id": "sku-9", "data": {"title": "x"}}
    assert validate(body).data == {"title": "x"}


def test_on_cue_point_plain_text_data_and_amf_number_duration() -> None:
    params = {"kind": "deal", "product_id": "sku-1", "duration": 30.0, "data": "50% off"}
    body = cue_point_body("onCuePoint", ({"parameters": params},))
    assert body == {
        "kind": "deal",
        "product_id": "sku-1",
        "duration": 30,
        "data": {"text": "50% off"},
    }
    assert isinstance(body["duration"], int)
    fractional = cue_point_body("onCuePoint", ({"parameters": {**params, "duration": 2.5}},))
    assert fractional is not None and fractional["duration"] == 2.5


def test_on_cue_point_object_data() -> None:
    params = {"kind": "poll", "data": {"question": "Q?", "options": ["a", "b"]}}
    assert cue_point_body("onCuePoint", ({"parameters": params},)) == params


def test_on_text_data_json() -> None:
    text = json.dumps({"kind": "product", "product_id": "sku-7", "data": {"title": "y"}})
    body = cue_point_body("onTextData", ({"type": "Text", "text": text},))
    assert body == {"kind": "product", "product_id": "sku-7", "data": {"title": "y"}}


def test_set_data_frame_on_shopcast_tag() -> None:
    obj = {"kind": "product", "product_id": "sku-3"}
    assert cue_point_body("@setDataFrame", ("onShopcastTag", obj)) == obj
    assert cue_point_body("onShopcastTag", (obj,)) == obj


def test_cue_point_keeps_only_tag_fields() -> None:
    """Fields a publisher cannot set (at, end, ids) are not copied; ``at`` is the message's."""
    params = {"kind": "product", "product_id": "s", "at": 5, "id": "x", "end": "z", "foo": 1}
    assert cue_point_body("onCuePoint", ({"parameters": params},)) == {
        "kind": "product",
        "product_id": "s",
    }


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("onMetaData", ({"width": 320.0},)),
        ("@setDataFrame", ("onMetaData", {"width": 320.0})),
        ("onCuePoint", ()),
        ("onCuePoint", ("text",)),
        ("onCuePoint", ({"name": "chapter", "parameters": {"title": "no kind"}},)),
        ("onCuePoint", ({"name": "chapter"},)),
        ("onCuePoint", ({"parameters": "kind=product"},)),
        ("onTextData", ({"text": "not json"},)),
        ("onTextData", ({"text": '["kind"]'},)),
        ("onTextData", ({"text": 5.0},)),
        ("onTextData", ({},)),
        ("onTextData", ({"text": '{"product_id": "sku"}'},)),
        ("onCaption", ({"kind": "product"},)),
    ],
)
def test_messages_without_a_tag_are_ignored(name: str, args: tuple[Any, ...]) -> None:
    assert cue_point_body(name, args) is None


def test_cue_point_with_invalid_fields_is_refused_by_validate() -> None:
    body = cue_point_body("onCuePoint", ({"parameters": {"kind": "product", "product_id": 5.0}},))
    assert body is not None
    refused(body)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["onCuePoint", "onTextData", "@setDataFrame", "onShopcastTag", "other"]),
    st.lists(
        json_values
        | st.fixed_dictionaries(
            {}, optional={"parameters": json_values, "text": st.text() | json_values}
        ),
        max_size=3,
    ),
)
def test_any_amf_message_gives_a_body_or_none(name: str, args: list[Any]) -> None:
    body = cue_point_body(name, tuple(args))
    if body is None:
        return
    assert isinstance(body, dict) and "kind" in body
    assert set(body) <= {"kind", "product_id", "duration", "data"}
    try:
        validate(body)
    except TagError as exc:
        assert exc.status == 422
