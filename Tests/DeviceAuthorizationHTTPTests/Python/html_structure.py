#!/usr/bin/env python3
"""Prints the element structure of an HTML page read from stdin, as Python's html.parser sees it.

One JSON array: for every start tag, [tag, [attribute names in order]]. The page-injection tests
compare this between a page rendered with a harmless value and one rendered with a payload: an
injected element or attribute shows up as a difference, whatever text surrounds it.
"""
import json
import sys
from html.parser import HTMLParser


class Structure(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.elements = []

    def handle_starttag(self, tag, attrs):
        self.elements.append([tag, [name for name, _ in attrs]])

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)


parser = Structure()
parser.feed(sys.stdin.buffer.read().decode("utf-8"))
parser.close()
json.dump(parser.elements, sys.stdout)
