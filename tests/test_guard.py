"""serving/guard.py's pure parts: the Accept header's q-values and the most values a
body valid under a JSON schema holds."""
import pytest

from serving.guard import accepts, body_bounds, max_values

NPY = b"application/x-npy"


@pytest.mark.parametrize("accept, expected", [
    (b"application/x-npy", True),
    (b"text/html, Application/X-NPY ; q=0.5", True),
    (b"application/x-npy;q=0", False),
    (b"application/x-npy; q=0.000", False),
    (b"application/x-npy;q=bad", True),
    (b"application/json", False),
    (b"", False),
])
def test_accepts_reads_q_values(accept, expected):
    assert accepts({b"accept": accept}, NPY) is expected


def test_max_values_multiplies_nested_bounds_and_refuses_unbounded_arrays():
    z = {"type": "array", "maxItems": 100, "items": {"type": "number"}}
    schema = {"type": "object", "properties": {"z": {"type": "array", "maxItems": 256, "items": z},
                                               "scale": {"type": "integer"}}}
    assert max_values(schema) == 256 * 100 + 1
    ref = {"type": "object", "properties": {"v": {"$ref": "#/$defs/Z"}}, "$defs": {"Z": z}}
    assert max_values(ref) == 100
    assert body_bounds({"/x": 100}) == {"/x": 100 * 32 + 4096}
    with pytest.raises(ValueError, match="maxItems"):
        max_values({"type": "array", "items": {"type": "number"}})
