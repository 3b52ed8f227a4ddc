"""The ``_method`` body field watch: every spelling it knows, at every split of the body."""

from __future__ import annotations

import itertools

import pytest

from nonod.proxy._bodyoverride import BodyOverrideWatch, parsed_for_fields

OVERRIDES = [
    b"_method=DELETE", b"a=1&_method=PATCH", b"_method[]=DELETE", b"a=1&_method%5B0%5D=x",
    b"a=1;_Method=x", b"a=1&%5F%6d%65%74%68%6F%64=x",
    b'{"_method":"DELETE"}', b'{"a": 1, "\\u005fmethod": "DELETE"}', b'{"_METHOD" \n\t : 1}',
    b'--b\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--b--\r\n',
    b"--b\r\nContent-Disposition: form-data; name=_method\r\n\r\nDELETE\r\n--b--\r\n",
    b"content-disposition: form-data; name=_method",
    b"Content-Disposition: form-data; name='_method'\r\n",
]
BENIGN = [
    b"", b"a=1&b=2", b"my_method=1", b"a=1&_method", b"a=1&_methods=2", b"x_method=DELETE",
    b'{"comment": "self.get_method() and http_method"}', b'{"_method_name": 1}',
    b"name=_methodical;",
    b'{"body": "call getattr(x, \'_method\') here"}', b'{"field": "_method"}',
]


def _found(body: bytes, cuts: tuple[int, ...]) -> bool:
    watch = BodyOverrideWatch()
    edges = (0, *cuts, len(body))
    return any([watch.feed(body[a:b]) for a, b in itertools.pairwise(edges)]
               + [watch.end()])


@pytest.mark.parametrize("body", OVERRIDES)
def test_an_override_is_found_at_every_split(body: bytes) -> None:
    for i in range(len(body) + 1):
        for j in range(i, len(body) + 1, 3):
            assert _found(body, (i, j)), (body, i, j)


@pytest.mark.parametrize("body", BENIGN)
def test_other_bodies_pass_at_every_split(body: bytes) -> None:
    for i in range(len(body) + 1):
        assert not _found(body, (i,)), (body, i)


def test_a_field_after_a_long_body_is_found() -> None:
    watch = BodyOverrideWatch()
    assert not watch.feed(b"a=" + b"x" * 100_000)
    assert not watch.feed(b"&_meth")
    assert watch.feed(b"od=DELETE")


def test_a_json_key_is_found_however_much_space_comes_before_its_colon() -> None:
    watch = BodyOverrideWatch()
    assert not watch.feed(b'{"a": 1, "_method"')
    for _ in range(100):
        assert not watch.feed(b" \n" * 5000)
    assert watch.feed(b': "DELETE"}')
    spaced = BodyOverrideWatch()  # a multipart name with white space around its `=`
    assert not spaced.feed(b"Content-Disposition: form-data; name" + b" " * 2000 + b"=")
    assert spaced.feed(b' "_method"\r\n\r\nDELETE')


def test_the_bodies_frameworks_read_fields_from_are_watched() -> None:
    for value in (b"application/x-www-form-urlencoded", b"Multipart/Form-Data; boundary=x",
                  b"application/json; charset=utf-8", b"application/vnd.api+json", b"",
                  b"multipart/form-data,boundary=x", b" application/x-www-form-urlencoded x"):
        assert parsed_for_fields([(b"content-type", value)]), value
    assert parsed_for_fields([])
    assert parsed_for_fields([(b"content-type", b"image/png"), (b"Content-Type", b"a/json")])
    for value in (b"application/octet-stream", b"image/png", b"text/plain"):
        assert not parsed_for_fields([(b"content-type", value)]), value
