"""Query names: a table's three relations, and names two tables would both claim."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rhei_lake.errors import SchemaError
from rhei_lake.relation_names import check_new_table, name_clashes, relation_names


@pytest.mark.parametrize(
    ("first", "second", "shared"),
    [
        ("x", "x_changes", "x_changes"),
        ("x_changes", "x", "x_changes"),
        ("x", "x_history", "x_history"),
        ("X", "x_Changes", "x_changes"),
        ("x_Changes", "X", "x_changes"),
        ("x_changes", "x_changes_history", "x_changes_history"),
        ("Orders", "orders", "orders"),
    ],
)
def test_a_clash_is_refused_in_either_order_naming_both_tables(first, second, shared):
    with pytest.raises(SchemaError) as refused:
        check_new_table(second, [first])
    message = str(refused.value)
    assert f"table {second!r} cannot be mirrored beside table {first!r}" in message
    assert repr(shared) in message and "ignore case" in message


@pytest.mark.parametrize(("first", "second"), [("x", "y"), ("x", "xchanges"), ("x_changes", "y"), ("history", "x")])
def test_distinct_names_pass(first, second):
    check_new_table(second, [first])
    check_new_table(first, [second])


def test_the_table_itself_is_not_a_clash():
    check_new_table("x", ["x", "y"])


def test_a_clash_names_what_each_relation_is():
    (clash,) = name_clashes(["x", "x_changes"])
    assert clash.describe() == "'x_changes' names both the change feed of table 'x' and table 'x_changes'"
    assert relation_names("t") == [("t", "rows"), ("t_history", "history"), ("t_changes", "change feed")]


_names = st.text(alphabet="xXyY_chanogeistr", min_size=1, max_size=14)


@settings(max_examples=300, deadline=None)
@given(st.lists(_names, max_size=12))
def test_tables_admitted_one_by_one_never_share_a_query_name(candidates):
    admitted: list[str] = []
    for name in candidates:
        try:
            check_new_table(name, admitted)
        except SchemaError:
            continue
        if name not in admitted:
            admitted.append(name)
    spelled = [n.lower() for table in admitted for n, _ in relation_names(table)]
    assert len(spelled) == len(set(spelled)), admitted
    assert name_clashes(admitted) == []
