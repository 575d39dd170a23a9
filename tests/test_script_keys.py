"""Every key a Lua script touches is one it was given in KEYS (issue 12).

Redis Cluster runs a script on the node of its keys' slot, and managed services (ElastiCache,
Upstash, Dragonfly) refuse a script that touches a key it was not given. So no script may
build a key (`prefix .. id`) or take one from ARGV or from Redis. This test reads each
script as the loader does (its `--#include` lines resolved, storage/scripts.py) and follows
where every key argument of `redis.call` / `redis.pcall` comes from, through local names,
table fields, table elements, function parameters and return values, back to KEYS.

It is deliberately coarse: a name or field is judged by every value it is given anywhere in
the script (not by scope), so a script passes only if it never mixes keys with other values
under one name. COMMANDS says which arguments of each command are keys; a command missing
there fails the test until it is added.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

import pytest

from taskit.storage import scripts

#: command -> positions (0-based, after the command name) of its key arguments; "all": every one
COMMANDS: dict[str, tuple[int, ...] | str] = {
    **dict.fromkeys(
        ["GET", "SET", "TYPE", "PTTL", "EXPIRE", "EXPIREAT", "PERSIST",
         "HGET", "HSET", "HSETNX", "HDEL", "HEXISTS", "HMGET", "HGETALL", "HLEN", "HINCRBY", "HSTRLEN",
         "LPUSH", "RPUSH", "LRANGE", "LLEN", "LREM", "LTRIM", "LINDEX",
         "SADD", "SREM", "SSCAN", "SMEMBERS", "SISMEMBER",
         "ZADD", "ZREM", "ZSCORE", "ZMSCORE", "ZRANGE", "ZRANGEBYSCORE", "ZREMRANGEBYSCORE", "ZCOUNT", "ZCARD"],
        (0,),
    ),
    "LMOVE": (0, 1),
    "RENAME": (0, 1),
    "DEL": "all",
    "EXISTS": "all",
    "TIME": (),
    "PUBLISH": (),  # a channel, not a key
}


# -- a small Lua reader -------------------------------------------------------------------------

@dataclass(frozen=True)
class Token:
    kind: str  # name, string, number, op
    text: str


_TOKEN = re.compile(
    r"""(?P<space>\s+)
      | (?P<comment>--\[(?P<eq>=*)\[.*?\](?P=eq)\]|--[^\n]*)
      | (?P<long>\[(?P<eq2>=*)\[.*?\](?P=eq2)\])
      | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*')
      | (?P<number>0[xX][0-9a-fA-F]+|\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+)
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<op>\.\.\.|\.\.|==|~=|<=|>=|[-+*/%^#<>=(){}\[\];:,.])
    """,
    re.VERBOSE | re.DOTALL,
)


def tokenize(source: str) -> list[Token]:
    tokens, at = [], 0
    while at < len(source):
        match = _TOKEN.match(source, at)
        assert match is not None, f"cannot read Lua at: {source[at:at + 40]!r}"
        at = match.end()
        kind = match.lastgroup
        if kind in ("space", "comment", "eq", "eq2"):
            continue
        if kind == "long":
            kind = "string"
        tokens.append(Token(kind, match.group()))
    return tokens


OPEN, CLOSE = {"(": ")", "[": "]", "{": "}"}, {")", "]", "}"}
#: words that end an expression statement
KEYWORDS = {"local", "function", "end", "if", "then", "else", "elseif", "for", "in", "do", "while", "repeat",
            "until", "return", "break"}


def split_args(tokens: list[Token], start: int) -> tuple[list[list[Token]], int]:
    """The comma-separated top-level parts between the bracket at `start` and its match."""
    close, depth, parts, current = OPEN[tokens[start].text], 0, [], []
    i = start + 1
    while True:
        t = tokens[i]
        if t.kind == "op" and t.text in OPEN:
            depth += 1
        elif t.kind == "op" and t.text in CLOSE:
            if depth == 0:
                assert t.text == close
                if current:
                    parts.append(current)
                return parts, i
            depth -= 1
        if depth == 0 and t.kind == "op" and t.text in (",", ";"):
            parts.append(current)
            current = []
        else:
            current.append(t)
        i += 1


def expression_end(tokens: list[Token], start: int) -> int:
    """Where the expression (or comma-separated list of them) that begins at `start` ends."""
    depth, i = 0, start
    while i < len(tokens):
        t = tokens[i]
        if t.kind == "op" and t.text in OPEN:
            depth += 1
        elif t.kind == "op" and t.text in CLOSE:
            if depth == 0:
                return i
            depth -= 1
        elif depth == 0 and t.kind == "name" and t.text in KEYWORDS:
            return i
        elif depth == 0 and i > start and t.kind in ("name", "string", "number") and tokens[i - 1].kind in ("name", "string", "number") \
                and tokens[i - 1].text not in ("and", "or", "not"):
            return i  # two operands in a row: a new statement began
        elif depth == 0 and i > start and t.kind == "name" and tokens[i - 1].kind == "op" and tokens[i - 1].text in CLOSE:
            return i  # `f(x) y = ...`: a new statement
        i += 1
    return i


def top_split(tokens: list[Token], sep: str = ",") -> list[list[Token]]:
    parts, current, depth = [], [], 0
    for t in tokens:
        if t.kind == "op" and t.text in OPEN:
            depth += 1
        elif t.kind == "op" and t.text in CLOSE:
            depth -= 1
        if depth == 0 and t.kind == "op" and t.text == sep:
            parts.append(current)
            current = []
        else:
            current.append(t)
    if current:
        parts.append(current)
    return parts


# -- where values come from -----------------------------------------------------------------------

class Flow:
    """Every value each symbol of a script is given: `x` (a name), `.f` (a field, any table),
    `x[]` (an element of x), `x{}` (an index of x), `f()` (what f returns)."""

    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.defs: dict[str, list[list[Token]]] = defaultdict(list)
        self.params: dict[str, list[str]] = {}
        #: function name -> (first, last) token index of its body
        self.bodies: dict[str, tuple[int, int]] = {}
        self._functions()
        self._assignments()
        self._calls()
        self._loops()

    # functions: parameters and returns
    def _functions(self) -> None:
        tokens = self.tokens
        for i, t in enumerate(tokens):
            if t.kind == "name" and t.text == "function" and i + 1 < len(tokens) and tokens[i + 1].kind == "name":
                name = tokens[i + 1].text
                parts, close = split_args(tokens, i + 2)
                self.params[name] = [p[0].text for p in parts]
                # returns up to the matching `end`: blocks open with function, if, do (a
                # loop's too) and repeat, and close with end and until
                depth, j = 1, close + 1
                while depth:
                    word = tokens[j].text if tokens[j].kind == "name" else ""
                    if word in ("function", "if", "do", "repeat"):
                        depth += 1
                    elif word in ("end", "until"):
                        depth -= 1
                    elif word == "return":
                        end = expression_end(tokens, j + 1)
                        for k, part in enumerate(top_split(tokens[j + 1:end])):
                            self.defs[f"{name}()"].append(part)
                            self.defs[f"{name}()#{k}"].append(part)
                    j += 1
                self.bodies[name] = (close, j)

    def _target(self, lhs: list[Token]) -> list[tuple[str, list[Token] | None]]:
        """The symbols an assignment target names: (symbol, index expression or None)."""
        if len(lhs) == 1:
            return [(lhs[0].text, None)]
        if lhs[-2].text == ".":
            return [("." + lhs[-1].text, None)]
        if lhs[-1].text == "]":
            depth, k = 0, len(lhs) - 1
            while True:
                if lhs[k].text == "]":
                    depth += 1
                elif lhs[k].text == "[":
                    depth -= 1
                    if depth == 0:
                        break
                k -= 1
            base = lhs[k - 1].text
            base = "." + base if k >= 2 and lhs[k - 2].text == "." else base
            return [(base + "[]", None), (base + "{}", lhs[k + 1:-1])]
        return []

    def _assignments(self) -> None:
        tokens = self.tokens
        for i, t in enumerate(tokens):
            if not (t.kind == "op" and t.text == "="):
                continue
            end = expression_end(tokens, i + 1)
            rhs = top_split(tokens[i + 1:end])
            if self._inside_table(i - 1):  # a field of a table constructor: `{name = value}`
                if tokens[i - 1].kind == "name" and rhs:
                    self.defs["." + tokens[i - 1].text].append(rhs[0])
                continue
            # the left side: back to the start of the statement
            j, depth = i - 1, 0
            while j >= 0:
                u = tokens[j]
                if u.kind == "op" and u.text in CLOSE:
                    depth += 1
                elif u.kind == "op" and u.text in OPEN:
                    if depth == 0:
                        break
                    depth -= 1
                elif depth == 0 and (u.kind == "name" and u.text in KEYWORDS or u.kind in ("string", "number")) or depth == 0 and j < i - 1 and u.kind == "name" and tokens[j + 1].kind == "name" or depth == 0 and j < i - 1 and u.kind == "name" and tokens[j + 1].text == "[" and u.text != "KEYS" \
                        and j > 0 and tokens[j - 1].kind == "op" and tokens[j - 1].text in CLOSE:
                    break
                j -= 1
            lhs = tokens[j + 1:i]
            targets = top_split(lhs)
            for k, target in enumerate(targets):
                if not target:
                    continue
                if k < len(rhs):
                    value = rhs[k]
                elif rhs and self._is_call(rhs[-1]):
                    value = [Token("name", self._callee(rhs[-1]) + f"()#{k - len(rhs) + 1}")]
                else:
                    continue
                for symbol, index in self._target(target):
                    self.defs[symbol].append(index if index is not None else value)
                    # a table built in place: its elements
                    if index is None and value and value[0].text == "{":
                        self._constructor(symbol, value)

    def _inside_table(self, j: int) -> bool:
        depth, i = 0, j
        while i >= 0:
            t = self.tokens[i]
            if t.kind == "op" and t.text in CLOSE:
                depth += 1
            elif t.kind == "op" and t.text in OPEN:
                if depth == 0:
                    return t.text == "{"
                depth -= 1
            i -= 1
        return False

    def _constructor(self, name: str, value: list[Token]) -> None:
        parts, _ = split_args(value, 0)
        for part in parts:
            if len(part) >= 2 and part[1].text == "=" and part[0].kind == "name":
                continue  # a field: taken by _assignments
            self.defs[name + "[]"].append(part)

    @staticmethod
    def _is_call(expr: list[Token]) -> bool:
        return len(expr) >= 3 and expr[-1].text == ")" and expr[0].kind == "name"

    @staticmethod
    def _callee(expr: list[Token]) -> str:
        return expr[0].text if len(expr) < 3 or expr[1].text != "." else expr[2].text

    def _calls(self) -> None:
        """Arguments given to the script's own functions bind their parameters."""
        tokens = self.tokens
        for i, t in enumerate(tokens[:-1]):
            if t.kind == "name" and t.text in self.params and tokens[i + 1].text == "(" and tokens[i - 1].text != "function":
                args, _ = split_args(tokens, i + 1)
                for param, arg in zip(self.params[t.text], args):
                    self.defs[param].append(arg)
                    if len(arg) == 1 and arg[0].kind == "name":  # a table passed: what the function puts in it
                        for part in ("[]", "{}"):
                            self.defs[arg[0].text + part].append([Token("name", param + part)])

    def _loops(self) -> None:
        tokens = self.tokens
        for i, t in enumerate(tokens):
            if not (t.kind == "name" and t.text == "for") or tokens[i + 2].text == "=":
                continue
            names = []
            j = i + 1
            while tokens[j].text != "in":
                if tokens[j].kind == "name":
                    names.append(tokens[j].text)
                j += 1
            iterator = tokens[j + 1].text  # ipairs / pairs
            args, _ = split_args(tokens, j + 2)
            source = args[0]
            elements: list[list[Token]]
            if source[0].text == "{":
                elements = split_args(source, 0)[0]
                index_of: list[list[Token]] = []
            else:
                base = self._symbol_of(source)
                elements = [[Token("name", base + "[]")]] if base else [source]
                index_of = [[Token("name", base + "{}")]] if base else [source]
            value_name = names[1] if len(names) > 1 else None
            key_name = names[0]
            for element in elements:
                if value_name:
                    self.defs[value_name].append(element)
            if iterator == "pairs":
                for index in index_of:
                    self.defs[key_name].append(index)

    @staticmethod
    def _symbol_of(expr: list[Token]) -> str | None:
        if len(expr) == 1 and expr[0].kind == "name":
            return expr[0].text
        if len(expr) >= 3 and expr[-2].text == "." and expr[-1].kind == "name":
            return "." + expr[-1].text
        return None

    # -- judging ------------------------------------------------------------------------

    def unsafe_symbols(self) -> dict[str, str]:
        """Symbol -> why it may hold something that is not from KEYS."""
        unsafe: dict[str, str] = {}
        changed = True
        while changed:
            changed = False
            for symbol, values in list(self.defs.items()):
                if symbol in unsafe:
                    continue
                for value in values:
                    why = self.why_unsafe(value, unsafe)
                    if why:
                        unsafe[symbol] = why
                        changed = True
                        break
        return unsafe

    def why_unsafe(self, expr: list[Token], unsafe: dict[str, str]) -> str | None:
        """Why `expr` may not be a key given in KEYS (None: it is one)."""
        if not expr:
            return "an empty expression"
        i = 0
        while i < len(expr):
            t = expr[i]
            if t.kind == "string":
                return f"a string literal {t.text}"
            if t.kind == "op" and t.text == "..":
                return "a concatenation (..)"
            if t.kind == "name" and t.text == "ARGV":
                return "ARGV"
            if t.kind == "name" and t.text in ("and", "or", "not", "nil", "false", "true"):
                i += 1
                continue
            if t.kind == "name":
                # the whole chain: name(.field)*([index])*(call)?
                symbol = t.text
                j = i + 1
                while j < len(expr):
                    u = expr[j]
                    if u.text == "." and j + 1 < len(expr):
                        symbol = "." + expr[j + 1].text
                        j += 2
                    elif u.text == "[":
                        _, close = split_args(expr, j)
                        symbol = symbol + "[]" if symbol != "KEYS" else "KEYS[]"
                        j = close + 1
                    elif u.text == "(":
                        _, close = split_args(expr, j)
                        symbol = symbol + "()"
                        j = close + 1
                    else:
                        break
                if symbol == "KEYS[]":
                    pass
                elif symbol in unsafe:
                    return f"{symbol} ({unsafe[symbol]})"
                elif symbol not in self.defs:
                    return f"{symbol}, which is given no value in the script"
                i = j
                continue
            if t.kind == "op" and t.text in OPEN:
                _, close = split_args(expr, i)
                i = close + 1
                continue
            i += 1
        return None

    def redis_calls(self) -> list[tuple[int, list[list[Token]]]]:
        """The redis.call / redis.pcall of the script, but for those in functions it never
        calls (a library's functions that this script does not use)."""
        found = []
        tokens = self.tokens
        unused = [(start, end) for name, (start, end) in self.bodies.items()
                  if not any(t.kind == "name" and t.text == name and not (k > 0 and tokens[k - 1].text == "function")
                             for k, t in enumerate(tokens))]
        for i in range(len(tokens) - 3):
            if any(start <= i < end for start, end in unused):
                continue
            if tokens[i].text == "redis" and tokens[i + 1].text == "." and tokens[i + 2].text in ("call", "pcall"):
                args, _ = split_args(tokens, i + 3)
                found.append((i, args))
        return found

    def command_names(self, expr: list[Token]) -> list[str]:
        """The commands an expression in the command position may name."""
        # (commands are written in capitals: 'LPUSH', not a compared value such as '1')
        literals = [t.text[1:-1] for t in expr if t.kind == "string" and re.fullmatch(r"'[A-Z]+'|\"[A-Z]+\"", t.text)]
        if literals:
            return literals
        symbol = self._symbol_of(expr)
        assert symbol is not None, f"cannot tell the command of {' '.join(t.text for t in expr)}"
        return [name for value in self.defs.get(symbol, []) for name in self.command_names(value)]


def check(source: str) -> list[str]:
    flow = Flow(tokenize(source))
    unsafe = flow.unsafe_symbols()
    problems = []
    for _, args in flow.redis_calls():
        command = " ".join(t.text for t in args[0])
        for name in flow.command_names(args[0]):
            assert name in COMMANDS, f"{name}: add it to COMMANDS with the positions of its keys"
            positions = COMMANDS[name]
            at = range(len(args) - 1) if positions == "all" else positions
            for p in at:
                if p + 1 >= len(args):
                    continue
                arg = args[p + 1]
                if arg and arg[0].text == "unpack":
                    # `unpack(list)` in a key position (DEL, EXISTS): its list's elements
                    inner, _ = split_args(arg, 1)
                    arg = [Token("name", (flow._symbol_of(inner[0]) or "?") + "[]")]
                why = flow.why_unsafe(arg, unsafe)
                if why:
                    problems.append(f"redis.call({command}, ...): key argument {p + 1} "
                                    f"`{' '.join(t.text for t in arg)}` may not come from KEYS: {why}")
    return problems


@pytest.mark.parametrize("name", scripts.NAMES)
def test_every_key_a_script_touches_comes_from_keys(name: str) -> None:
    assert check(scripts.source(name)) == []


@pytest.mark.parametrize(
    "snippet",
    [
        "redis.call('DEL', ARGV[1])",
        "local key = 'taskit:job:' .. ARGV[1]\nredis.call('HGET', key, 'f')",
        "local function k(id) return KEYS[1] .. id end\nredis.call('HSET', k(ARGV[1]), 'f', 1)",
        "local place = {queue = ARGV[2] .. 'x'}\nredis.call('RPUSH', place.queue, 1)",
        "local t = {}\nt[#t + 1] = ARGV[1]\nfor _, key in ipairs(t) do redis.call('DEL', key) end",
        "local function push(list, id) redis.call('RPUSH', list, id) end\npush(KEYS[1], 1)\npush('x', 2)",
        "local a = KEYS[1]\nlocal b = redis.call('GET', a)\nredis.call('LMOVE', a, b, 'LEFT', 'RIGHT')",
        "redis.call('EXISTS', KEYS[1], KEYS[2] .. 'x')",
    ],
)
def test_the_check_finds_a_key_built_or_taken_from_elsewhere(snippet: str) -> None:
    assert check(snippet), snippet


@pytest.mark.parametrize(
    "snippet",
    [
        "redis.call('DEL', KEYS[1], KEYS[2])",
        "local place = {queue = KEYS[2]}\nredis.call('RPUSH', place.queue, ARGV[1])",
        "local keys = {KEYS[1], KEYS[2]}\nfor _, key in ipairs(keys) do redis.call('DEL', key) end",
        "local function push(list, id) redis.call('RPUSH', list, id) end\npush(KEYS[1], ARGV[1])",
        "redis.call(ARGV[1] == '1' and 'LPUSH' or 'RPUSH', KEYS[1], ARGV[2])",
        "redis.call('PUBLISH', 'channel:' .. ARGV[1], 'x')",
    ],
)
def test_the_check_passes_keys_from_keys(snippet: str) -> None:
    assert check(snippet) == [], snippet
