"""The API's path converters, registered on import: every app's api/urls.py imports this module before
it uses `<id:...>`."""

from django.urls import register_converter


class IdConverter:
    """A database id: at most 18 digits, so it always fits a bigint (no 500 on a huge number)."""

    regex = "[0-9]{1,18}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value) -> str:
        return str(int(value))


register_converter(IdConverter, "id")
