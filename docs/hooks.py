"""mkdocs hook: renders the Sphinx roles some docstrings use (:class:`X`) as plain code."""
import re

_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|obj):(?=<code>)")


def on_page_content(html, **kwargs):
    return _ROLE.sub("", html)
