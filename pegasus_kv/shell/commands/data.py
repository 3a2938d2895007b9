"""Data commands on the current table (`use TABLE`), with Pegasus's names and arguments:
set, get, del, exist, ttl, incr, multi_set, multi_get, multi_get_range, multi_get_sortkeys,
multi_del, multi_del_range, check_and_set, check_and_mutate, count, hash.

Keys and values are typed as text with Pegasus-style escapes (`\\x00`) and printed escaped.
"""

from __future__ import annotations

from pegasus_kv.client import Mutations
from pegasus_kv.core.errors import InvalidArgumentError
from pegasus_kv.core.hashing import key_hash
from pegasus_kv.core.validation import MAX_KEYS_PER_REQUEST
from pegasus_kv.shell.commands.base import Command, Context
from pegasus_kv.shell.commands.common import (
    CHECK_TYPES,
    DEFAULT_MAX_COUNT,
    MAX_MULTI_GET_COUNT,
    NO_VALUE,
    SORT_KEY_FILTER,
    START_INCLUSIVE,
    STOP_INCLUSIVE,
    key_filter,
    max_count_option,
    record_json,
    sort_key_table,
)
from pegasus_kv.shell.output import EscapeError, escape_bytes, format_fields, quoted, unescape
from pegasus_kv.shell.parsing import CommandSpec, Kind, Option, ParsedArgs, Positional, UsageError, parse_int

GROUP = "data"

HASH_KEY = Positional("HASH_KEY", "hash_key", Kind.BYTES, "the hash key (\\xNN escapes for bytes)")
SORT_KEY = Positional("SORT_KEY", "sort_key", Kind.BYTES, "the sort key")
START_SORT_KEY = Positional("START_SORT_KEY", "start_sort_key", Kind.BYTES, "start of the range ('' = first)")
STOP_SORT_KEY = Positional("STOP_SORT_KEY", "stop_sort_key", Kind.BYTES, "end of the range ('' = last)")
MAX_TTL_S = 0xFFFF_FFFF
INT64_MIN, INT64_MAX = (
    -(2**63),
    2**63 - 1,
)  # incr works on int64 values  # the core refuses a TTL whose expiry does not fit; this bounds the typing


# --- single records ----------------------------------------------------------------------------


async def run_set(ctx: Context) -> None:
    args = ctx.args
    await ctx.table().set(
        args.data("hash_key"), args.data("sort_key"), args.data("value"), args.integer("ttl", 0)
    )
    ctx.out.write("OK\n")


async def run_get(ctx: Context) -> None:
    hash_key, sort_key = ctx.args.data("hash_key"), ctx.args.data("sort_key")
    value = await ctx.table().get(hash_key, sort_key)
    human = "Not found\n" if value is None else quoted(value) + "\n"
    ctx.emit(human, {**record_json(hash_key, sort_key, value), "found": value is not None})


async def run_del(ctx: Context) -> None:
    await ctx.table().delete(ctx.args.data("hash_key"), ctx.args.data("sort_key"))
    ctx.out.write("OK\n")


async def run_exist(ctx: Context) -> None:
    hash_key, sort_key = ctx.args.data("hash_key"), ctx.args.data("sort_key")
    exists = await ctx.table().exist(hash_key, sort_key)
    ctx.emit(
        "True\n" if exists else "False\n",
        {"hash_key": escape_bytes(hash_key), "sort_key": escape_bytes(sort_key), "exist": exists},
    )


async def run_ttl(ctx: Context) -> None:
    hash_key, sort_key = ctx.args.data("hash_key"), ctx.args.data("sort_key")
    ttl_s = await ctx.table().ttl(hash_key, sort_key)
    if ttl_s is None:
        human = "Not found\n"
    elif ttl_s < 0:
        human = "Infinite\n"
    else:
        human = f"{ttl_s}\n"
    document = {
        "hash_key": escape_bytes(hash_key),
        "sort_key": escape_bytes(sort_key),
        "found": ttl_s is not None,
        "ttl_seconds": ttl_s,  # -1: no TTL
    }
    ctx.emit(human, document)


async def run_incr(ctx: Context) -> None:
    args = ctx.args
    hash_key, sort_key = args.data("hash_key"), args.data("sort_key")
    new_value = await ctx.table().incr(hash_key, sort_key, args.integer("increment", 1))
    ctx.emit(
        f"{new_value}\n",
        {"hash_key": escape_bytes(hash_key), "sort_key": escape_bytes(sort_key), "new_value": new_value},
    )


async def run_hash(ctx: Context) -> None:
    """Pegasus's `hash`: the key's hash; with a current table, its partition and who serves it."""
    hash_key, sort_key = ctx.args.data("hash_key"), ctx.args.data("sort_key")
    hash_value = key_hash(hash_key, sort_key)
    document: dict[str, object] = {
        "hash_key": escape_bytes(hash_key),
        "sort_key": escape_bytes(sort_key),
        "hash": hash_value,
    }
    fields = [("hash_key", quoted(hash_key)), ("sort_key", quoted(sort_key)), ("hash", str(hash_value))]
    if ctx.state.table_name is not None:
        # A fresh configuration, so that primary and secondaries are who serves the key now.
        table = await ctx.client.open_table(ctx.state.table_name)
        route = table.route
        index = route.partition_of(hash_key, sort_key)
        config = route.configs[index]
        serving = {
            "app_name": route.name,
            "app_id": route.app_id,
            "partition_count": route.partition_count,
            "partition_index": index,
            "gpid": str(route.gpid(index)),
            "ballot": config.ballot,
            "primary": config.primary,
            "secondaries": list(config.secondaries),
        }
        document.update(serving)
        fields += [
            ("app_name", route.name),
            ("app_id", str(route.app_id)),
            ("partition_count", str(route.partition_count)),
            ("partition_index", str(index)),
            ("gpid", str(route.gpid(index))),
            ("ballot", str(config.ballot)),
            ("primary", config.primary or "-"),
            ("secondaries", ",".join(config.secondaries) or "-"),
        ]
    ctx.emit(format_fields(fields), document)


# --- one hash key ------------------------------------------------------------------------------


async def run_multi_set(ctx: Context) -> None:
    words = ctx.args.datas("pairs")
    if len(words) % 2:
        raise UsageError("multi_set takes SORT_KEY VALUE pairs; the last sort key has no value")
    kvs: dict[bytes, bytes] = {}
    for sort_key, value in zip(words[::2], words[1::2], strict=True):
        if sort_key in kvs:
            raise UsageError(f"duplicate sort key {quoted(sort_key)}")
        kvs[sort_key] = value
    await ctx.table().multi_set(ctx.args.data("hash_key"), kvs, ctx.args.integer("ttl", 0))
    ctx.out.write(f"OK: {len(kvs)} records set\n")


def _emit_multi_get(
    ctx: Context, hash_key: bytes, items: list[tuple[bytes, bytes]], complete: bool, *, no_value: bool
) -> None:
    more = "fetch completed" if complete else "more records left (raise -n to read on)"
    human = sort_key_table(items, no_value=no_value) + f"\n{len(items)} records got, {more}.\n"
    document = {
        "hash_key": escape_bytes(hash_key),
        "count": len(items),
        "complete": complete,
        "items": [
            {"sort_key": escape_bytes(sk)}
            if no_value
            else {"sort_key": escape_bytes(sk), "value": escape_bytes(v)}
            for sk, v in items
        ],
    }
    ctx.emit(human, document)


async def run_multi_get(ctx: Context) -> None:
    hash_key = ctx.args.data("hash_key")
    sort_keys = ctx.args.datas("sort_keys")
    table = ctx.table()
    if sort_keys:
        if ctx.args.has("max_count"):
            raise UsageError("-n applies to a whole hash key; with sort keys named, all of them are read")
        result = await table.multi_get(hash_key, sort_keys, max_kv_count=len(sort_keys))
    else:
        count = ctx.args.integer("max_count", DEFAULT_MAX_COUNT)
        result = await table.multi_get(hash_key, max_kv_count=count)
    _emit_multi_get(ctx, hash_key, list(result.items.items()), result.complete, no_value=False)


async def run_multi_get_range(ctx: Context) -> None:
    args = ctx.args
    hash_key = args.data("hash_key")
    no_value = args.flag("no_value")
    result = await ctx.table().multi_get(
        hash_key,
        start_sort_key=args.data("start_sort_key"),
        stop_sort_key=args.data("stop_sort_key"),
        start_inclusive=args.boolean("start_inclusive", True),
        stop_inclusive=args.boolean("stop_inclusive", False),
        sort_key_filter=key_filter(args, "sort_key"),
        max_kv_count=args.integer("max_count", DEFAULT_MAX_COUNT),
        no_value=no_value,
        reverse=args.flag("reverse"),
    )
    _emit_multi_get(ctx, hash_key, list(result.items.items()), result.complete, no_value=no_value)


async def run_multi_get_sortkeys(ctx: Context) -> None:
    hash_key = ctx.args.data("hash_key")
    count = ctx.args.integer("max_count", DEFAULT_MAX_COUNT)
    result = await ctx.table().multi_get(hash_key, max_kv_count=count, no_value=True)
    _emit_multi_get(ctx, hash_key, list(result.items.items()), result.complete, no_value=True)


async def run_multi_del(ctx: Context) -> None:
    deleted = await ctx.table().multi_delete(ctx.args.data("hash_key"), ctx.args.datas("sort_keys"))
    ctx.emit(f"OK: {deleted} records deleted\n", {"deleted": deleted})


async def run_multi_del_range(ctx: Context) -> None:
    args = ctx.args
    deleted = await ctx.table().delete_range(
        args.data("hash_key"),
        args.data("start_sort_key"),
        args.data("stop_sort_key"),
        start_inclusive=args.boolean("start_inclusive", True),
        stop_inclusive=args.boolean("stop_inclusive", False),
        sort_key_filter=key_filter(args, "sort_key"),
    )
    ctx.emit(f"OK: {deleted} records deleted\n", {"deleted": deleted})


async def run_count(ctx: Context) -> None:
    hash_key = ctx.args.data("hash_key")
    count = await ctx.table().sort_key_count(hash_key)
    ctx.emit(f"{count}\n", {"hash_key": escape_bytes(hash_key), "count": count})


# --- check and set / mutate --------------------------------------------------------------------


def _check(args: ParsedArgs) -> tuple[bytes, str, bytes]:
    check_type = args.optional_text("check_type")
    if check_type is None:
        raise UsageError("-t CHECK_TYPE is required")
    return args.data("check_sort_key", b""), check_type, args.data("check_operand", b"")


def _check_result(
    ctx: Context, what: str, passed: bool, exist: bool, value: bytes | None, *, returned: bool
) -> None:
    lines = [f"{what} succeed\n" if passed else f"{what} failed, because check not passed\n"]
    document: dict[str, object] = {"passed": passed}
    if returned:
        shown = quoted(value) if exist and value is not None else "(not exist)"
        lines.append(f"check value: {shown}\n")
        document["check_value_exist"] = exist
        document["check_value"] = escape_bytes(value) if exist and value is not None else None
    ctx.emit("".join(lines), document)


async def run_check_and_set(ctx: Context) -> None:
    args = ctx.args
    check_sort_key, check_type, operand = _check(args)
    value = args.optional_data("set_value")
    if value is None:
        raise UsageError("-v SET_VALUE is required")
    returned = args.flag("return_check_value")
    result = await ctx.table().check_and_set(
        args.data("hash_key"),
        check_sort_key,
        CHECK_TYPES[check_type],
        operand,
        args.data("set_sort_key", check_sort_key),
        value,
        ttl=args.integer("ttl", 0),
        return_check_value=returned,
    )
    _check_result(ctx, "set", result.passed, result.check_value_exist, result.check_value, returned=returned)


def parse_mutations(words: list[str]) -> Mutations:
    """`set SORT_KEY VALUE [TTL_SECONDS]` and `del SORT_KEY`, one after another.

    After a set's VALUE, an integer can only be its TTL (the next mutation starts with a keyword),
    so the grammar needs no separators.
    """

    def data(word: str) -> bytes:
        try:
            return unescape(word)
        except EscapeError as error:
            raise UsageError(f"mutation: {error}") from None

    mutations = Mutations()
    position = 0
    try:
        while position < len(words):
            keyword = words[position]
            if keyword == "set":
                if position + 2 >= len(words):
                    raise UsageError("mutation `set` needs SORT_KEY VALUE")
                sort_key, value = data(words[position + 1]), data(words[position + 2])
                position += 3
                ttl = 0
                if position < len(words) and words[position] not in ("set", "del"):
                    ttl = parse_int(words[position], "mutation TTL_SECONDS", 0, MAX_TTL_S)
                    position += 1
                mutations.put(sort_key, value, ttl)
            elif keyword == "del":
                if position + 1 >= len(words):
                    raise UsageError("mutation `del` needs SORT_KEY")
                mutations.delete(data(words[position + 1]))
                position += 2
            else:
                raise UsageError(f"a mutation starts with set or del, not {keyword!r}")
    except InvalidArgumentError as error:
        raise UsageError(f"mutation: {error.message}") from None
    if not mutations:
        raise UsageError("check_and_mutate needs at least one mutation (set SORT_KEY VALUE | del SORT_KEY)")
    return mutations


async def run_check_and_mutate(ctx: Context) -> None:
    args = ctx.args
    check_sort_key, check_type, operand = _check(args)
    mutations = parse_mutations(args.texts("mutations"))
    returned = args.flag("return_check_value")
    result = await ctx.table().check_and_mutate(
        args.data("hash_key"),
        check_sort_key,
        CHECK_TYPES[check_type],
        operand,
        mutations,
        return_check_value=returned,
    )
    _check_result(
        ctx, "mutate", result.passed, result.check_value_exist, result.check_value, returned=returned
    )


# --- specs -------------------------------------------------------------------------------------

TTL_POSITIONAL = Positional(
    "TTL_SECONDS",
    "ttl",
    Kind.INT,
    "time to live in seconds (0: none)",
    required=False,
    minimum=0,
    maximum=MAX_TTL_S,
)
CHECK_OPTIONS = (
    Option(("-c", "--check_sort_key"), "check_sort_key", Kind.BYTES, "the sort key to check (default '')"),
    Option(
        ("-t", "--check_type"),
        "check_type",
        Kind.CHOICE,
        "how to check (required)",
        choices=tuple(CHECK_TYPES),
    ),
    Option(("-o", "--check_operand"), "check_operand", Kind.BYTES, "the operand of the check (default '')"),
)
RETURN_CHECK_VALUE = Option(
    ("-r", "--return_check_value"), "return_check_value", Kind.FLAG, "also print the checked record's value"
)

COMMANDS = (
    Command(
        CommandSpec(
            "set",
            GROUP,
            "set one record",
            positionals=(
                HASH_KEY,
                SORT_KEY,
                Positional("VALUE", "value", Kind.BYTES, "the value"),
                TTL_POSITIONAL,
            ),
            mutates=True,
        ),
        run_set,
    ),
    Command(
        CommandSpec("get", GROUP, "read one record", positionals=(HASH_KEY, SORT_KEY), prints_data=True),
        run_get,
    ),
    Command(
        CommandSpec("del", GROUP, "delete one record", positionals=(HASH_KEY, SORT_KEY), mutates=True),
        run_del,
    ),
    Command(
        CommandSpec(
            "exist", GROUP, "whether a record exists", positionals=(HASH_KEY, SORT_KEY), prints_data=True
        ),
        run_exist,
    ),
    Command(
        CommandSpec(
            "ttl",
            GROUP,
            "seconds a record has left (Infinite: no TTL)",
            positionals=(HASH_KEY, SORT_KEY),
            prints_data=True,
        ),
        run_ttl,
    ),
    Command(
        CommandSpec(
            "incr",
            GROUP,
            "add to an int64 value atomically; prints the new value",
            positionals=(
                HASH_KEY,
                SORT_KEY,
                Positional(
                    "INCREMENT",
                    "increment",
                    Kind.INT,
                    "what to add (default 1; may be negative)",
                    required=False,
                    minimum=INT64_MIN,
                    maximum=INT64_MAX,
                ),
            ),
            mutates=True,
            prints_data=True,
        ),
        run_incr,
    ),
    Command(
        CommandSpec(
            "hash",
            GROUP,
            "the hash of a key; with a current table, its partition and where it is served",
            positionals=(HASH_KEY, SORT_KEY),
            prints_data=True,
        ),
        run_hash,
    ),
    Command(
        CommandSpec(
            "multi_set",
            GROUP,
            "set many sort keys of one hash key atomically",
            positionals=(
                HASH_KEY,
                Positional(
                    "SORT_KEY VALUE",
                    "pairs",
                    Kind.BYTES,
                    "sort keys and their values",
                    repeated=True,
                    max_count=2 * MAX_KEYS_PER_REQUEST,
                ),
            ),
            options=(
                Option(
                    ("-t", "--ttl"),
                    "ttl",
                    Kind.INT,
                    "time to live of every record in seconds",
                    minimum=0,
                    maximum=MAX_TTL_S,
                ),
            ),
            mutates=True,
        ),
        run_multi_set,
    ),
    Command(
        CommandSpec(
            "multi_get",
            GROUP,
            "read the named sort keys of a hash key, or all of them",
            positionals=(
                HASH_KEY,
                Positional(
                    "SORT_KEY",
                    "sort_keys",
                    Kind.BYTES,
                    "sort keys to read (none: all)",
                    required=False,
                    repeated=True,
                ),
            ),
            options=(max_count_option(DEFAULT_MAX_COUNT, MAX_MULTI_GET_COUNT),),
            prints_data=True,
        ),
        run_multi_get,
    ),
    Command(
        CommandSpec(
            "multi_get_range",
            GROUP,
            "read a range of sort keys of a hash key",
            positionals=(HASH_KEY, START_SORT_KEY, STOP_SORT_KEY),
            options=(
                START_INCLUSIVE,
                STOP_INCLUSIVE,
                *SORT_KEY_FILTER,
                max_count_option(DEFAULT_MAX_COUNT, MAX_MULTI_GET_COUNT),
                NO_VALUE,
                Option(("-r", "--reverse"), "reverse", Kind.FLAG, "read from the end of the range backwards"),
            ),
            prints_data=True,
        ),
        run_multi_get_range,
    ),
    Command(
        CommandSpec(
            "multi_get_sortkeys",
            GROUP,
            "list the sort keys of a hash key",
            positionals=(HASH_KEY,),
            options=(max_count_option(DEFAULT_MAX_COUNT, MAX_MULTI_GET_COUNT),),
            prints_data=True,
        ),
        run_multi_get_sortkeys,
    ),
    Command(
        CommandSpec(
            "multi_del",
            GROUP,
            "delete sort keys of one hash key atomically",
            positionals=(
                HASH_KEY,
                Positional("SORT_KEY", "sort_keys", Kind.BYTES, "sort keys to delete", repeated=True),
            ),
            mutates=True,
            prints_data=True,
        ),
        run_multi_del,
    ),
    Command(
        CommandSpec(
            "multi_del_range",
            GROUP,
            "delete a range of sort keys of a hash key (in batches, not atomic as a whole)",
            positionals=(HASH_KEY, START_SORT_KEY, STOP_SORT_KEY),
            options=(START_INCLUSIVE, STOP_INCLUSIVE, *SORT_KEY_FILTER),
            mutates=True,
            prints_data=True,
        ),
        run_multi_del_range,
    ),
    Command(
        CommandSpec(
            "count", GROUP, "how many sort keys a hash key has", positionals=(HASH_KEY,), prints_data=True
        ),
        run_count,
    ),
    Command(
        CommandSpec(
            "check_and_set",
            GROUP,
            "if a record passes a check, set a record (atomically)",
            positionals=(HASH_KEY,),
            options=(
                *CHECK_OPTIONS,
                Option(
                    ("-s", "--set_sort_key"),
                    "set_sort_key",
                    Kind.BYTES,
                    "the sort key to set (default: the checked one)",
                ),
                Option(("-v", "--set_value"), "set_value", Kind.BYTES, "the value to set (required)"),
                Option(
                    ("-l", "--set_value_ttl_seconds"),
                    "ttl",
                    Kind.INT,
                    "time to live of the set record in seconds",
                    minimum=0,
                    maximum=MAX_TTL_S,
                ),
                RETURN_CHECK_VALUE,
            ),
            mutates=True,
            prints_data=True,
            description="example: check_and_set user -c lock -t not_exist -s lock -v me -l 30",
        ),
        run_check_and_set,
    ),
    Command(
        CommandSpec(
            "check_and_mutate",
            GROUP,
            "if a record passes a check, apply puts and deletes (atomically)",
            positionals=(
                HASH_KEY,
                Positional(
                    "MUTATION",
                    "mutations",
                    Kind.TEXT,
                    "set SORT_KEY VALUE [TTL_SECONDS] | del SORT_KEY",
                    repeated=True,
                    max_count=3 * MAX_KEYS_PER_REQUEST,
                ),
            ),
            options=(*CHECK_OPTIONS, RETURN_CHECK_VALUE),
            mutates=True,
            prints_data=True,
            description=(
                "mutations follow the hash key, each `set SORT_KEY VALUE [TTL_SECONDS]` or `del SORT_KEY`\n"
                "(Pegasus's shell asks for them interactively; here they are part of the line).\n"
                "example: check_and_mutate user -c visits -t int_greater -o 10 set tier gold del trial"
            ),
        ),
        run_check_and_mutate,
    ),
)
