"""CSV and Markdown result tables."""

import csv

from harness.tables import markdown_table, write_table


def test_markdown_and_csv_hold_the_same_rows(tmp_path):
    rows = [{"attack": "random", "hr@50": 0.123456}, {"attack": "pga", "hr@50": 0.5, "note": "x"}]
    assert markdown_table(rows).splitlines() == [
        "| attack | hr@50 | note |", "|---|---|---|", "| random | 0.1235 |  |", "| pga | 0.5000 | x |"]
    csv_path, md_path = write_table(rows, tmp_path / "t", title="Table 3")
    assert list(csv.DictReader(csv_path.open())) == [
        {"attack": "random", "hr@50": "0.123456", "note": ""}, {"attack": "pga", "hr@50": "0.5", "note": "x"}]
    assert md_path.read_text().startswith("## Table 3\n\n| attack |")


def test_a_pipe_in_a_header_or_cell_is_escaped_so_every_row_keeps_its_columns():
    table = markdown_table([{"|q_t| / |q_k|": 1.5, "note": "a|b"}])
    assert table.splitlines() == ["| \\|q_t\\| / \\|q_k\\| | note |", "|---|---|", "| 1.5000 | a\\|b |"]
    assert all(line.replace("\\|", "").count("|") == 3 for line in table.splitlines())
