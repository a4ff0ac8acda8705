"""The composite rules' little language: ``and``, ``or``, ``not`` and parentheses over rule names.

A recursive-descent parser of our own (user text is never ``eval``-ed):

    expr   := term ("or" term)*
    term   := factor ("and" factor)*
    factor := "not" factor | "(" expr ")" | NAME
    NAME   := a bare word ([A-Za-z0-9_.:*-]+) or a "quoted name"

Depth and length are bounded so a hostile expression cannot exhaust the stack.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_LENGTH = 2000
MAX_DEPTH = 50
_TOKEN = re.compile(r'\s*(?:(\()|(\))|"((?:[^"\\]|\\.)*)"|([A-Za-z0-9_.:*\-]+))')
_KEYWORDS = {"and", "or", "not"}


class ExpressionError(ValueError):
    """An expression that cannot be parsed, with where and why."""


@dataclass(frozen=True, slots=True)
class Expression:
    """A parsed expression: ``op`` is ``name``, ``not``, ``and`` or ``or``."""

    op: str
    name: str = ""
    args: tuple[Expression, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Expression:
        """Parse an expression (raises ExpressionError saying where it went wrong)."""
        if not text or not text.strip():
            raise ExpressionError("the expression is empty")
        if len(text) > MAX_LENGTH:
            raise ExpressionError(f"the expression is over {MAX_LENGTH} characters")
        return _Parser(text).parse()

    def names(self) -> set[str]:
        """Return the rule names the expression refers to."""
        if self.op == "name":
            return {self.name}
        return set().union(*(a.names() for a in self.args))

    def evaluate(self, true_names: set[str]) -> bool:
        """Return the value of the expression when exactly ``true_names`` are true."""
        if self.op == "name":
            return self.name in true_names
        if self.op == "not":
            return not self.args[0].evaluate(true_names)
        if self.op == "and":
            return all(a.evaluate(true_names) for a in self.args)
        return any(a.evaluate(true_names) for a in self.args)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []  # (kind, value, position)
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            m = _TOKEN.match(text, pos)
            if not m:
                raise ExpressionError(f"unexpected {text[pos:].lstrip()[:10]!r} at character {pos + 1}")
            start = m.start() + len(m.group(0)) - len(m.group(0).lstrip())
            if m.group(1):
                self.tokens.append(("(", "(", start))
            elif m.group(2):
                self.tokens.append((")", ")", start))
            elif m.group(3) is not None:
                self.tokens.append(("name", re.sub(r"\\(.)", r"\1", m.group(3)), start))
            else:
                word = m.group(4)
                kind = word.lower() if word.lower() in _KEYWORDS else "name"
                self.tokens.append((kind, word, start))
            pos = m.end()
        self.i = 0
        self.depth = 0

    def peek(self) -> str | None:
        return self.tokens[self.i][0] if self.i < len(self.tokens) else None

    def take(self, kind: str) -> tuple[str, str, int]:
        if self.peek() != kind:
            where = f"at character {self.tokens[self.i][2] + 1}" if self.i < len(self.tokens) else "at the end"
            found = repr(self.tokens[self.i][1]) if self.i < len(self.tokens) else "nothing"
            raise ExpressionError(f"expected {'a rule name' if kind == 'name' else repr(kind)} {where}, "
                                  f"found {found}")
        token = self.tokens[self.i]
        self.i += 1
        return token

    def parse(self) -> Expression:
        expr = self.expr()
        if self.i != len(self.tokens):
            kind, value, pos = self.tokens[self.i]
            raise ExpressionError(f"unexpected {value!r} at character {pos + 1}")
        return expr

    def expr(self) -> Expression:
        args = [self.term()]
        while self.peek() == "or":
            self.i += 1
            args.append(self.term())
        return args[0] if len(args) == 1 else Expression("or", args=tuple(args))

    def term(self) -> Expression:
        args = [self.factor()]
        while self.peek() == "and":
            self.i += 1
            args.append(self.factor())
        return args[0] if len(args) == 1 else Expression("and", args=tuple(args))

    def factor(self) -> Expression:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionError(f"the expression nests deeper than {MAX_DEPTH}")
        try:
            kind = self.peek()
            if kind == "not":
                self.i += 1
                return Expression("not", args=(self.factor(),))
            if kind == "(":
                self.i += 1
                inner = self.expr()
                self.take(")")
                return inner
            return Expression("name", name=self.take("name")[1])
        finally:
            self.depth -= 1
