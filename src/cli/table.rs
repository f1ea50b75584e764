//! The AWS CLI's `--output table` format, a port of awscli 1.46.3's
//! `TableFormatter` (`awscli/formatter.py`) and `MultiTable` (`awscli/table.py`).
//!
//! The formatter first turns the response into a list of titled *sections*
//! (one per dict or list, nested ones indented one level deeper), then renders
//! them all at the width of the widest one. A dict's scalar values become one
//! row under a header of its (sorted) keys; when the table would be wider than
//! the terminal, every single-row section is flipped into `key | value` rows.

use std::{collections::BTreeSet, mem};

use serde_json::{Map, Value};

use super::text::{is_scalar, python_str};

/// colorama's `Style.RESET_ALL`.
const RESET: &str = "\x1b[0m";
/// `ColorizedStyler.style_row_element`: `Style.BRIGHT + Fore.BLUE`.
const ROW_ELEMENT_STYLE: &str = "\x1b[1m\x1b[34m";
/// `ColorizedStyler.style_indentation_char('|')`: `Style.DIM + Fore.YELLOW`, `|`, `RESET_ALL`.
const COLOR_INDENT_CHAR: &str = "\x1b[2m\x1b[33m|\x1b[0m";
/// Cell padding the AWS CLI adds to every column (`padding=4`).
const CELL_PADDING: usize = 4;

/// `value` as `aws <operation> --output table` prints it, titled `title` (the
/// operation name), for a terminal `width` columns wide (the AWS CLI uses 80
/// when stdout is not a terminal). Falsy values (`null`, `false`, `0`, `""`,
/// `[]`, `{}`) print nothing, as `_build_table` returns `False` for them.
pub fn render(title: &str, value: &Value, width: usize, color: bool) -> String {
    if is_falsy(value) {
        return String::new();
    }
    let mut builder = Builder::new(title);
    builder.fill(value, 0, Some(title));
    render_sections(builder.into_sections(), width, color)
}

/// Python truthiness of a decoded JSON value.
fn is_falsy(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(flag) => !flag,
        Value::Number(number) => number.as_f64() == Some(0.0),
        Value::String(text) => text.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
    }
}

/// One titled block of the table (`table.Section`).
#[derive(Default)]
struct Section {
    /// `None` is Python's `None` title, which a list of dicts nested directly
    /// in a list reopens for its later elements: not printed, but
    /// `get_text_length(None)` measures `str(None)`, four columns.
    title: Option<String>,
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
    indent: usize,
    num_cols: Option<usize>,
    max_widths: Vec<usize>,
}

impl Section {
    fn new(title: Option<&str>, indent: usize) -> Self {
        Section {
            title: title.map(str::to_owned),
            indent,
            ..Section::default()
        }
    }

    fn add_header(&mut self, headers: Vec<String>) {
        self.update_max_widths(&headers);
        self.num_cols.get_or_insert(headers.len());
        self.headers = headers;
    }

    fn add_row(&mut self, row: Vec<String>) {
        self.num_cols.get_or_insert(row.len());
        self.update_max_widths(&row);
        self.rows.push(row);
    }

    fn update_max_widths(&mut self, cells: &[String]) {
        if self.max_widths.is_empty() {
            self.max_widths = cells.iter().map(|cell| text_width(cell)).collect();
        } else {
            for (width, cell) in self.max_widths.iter_mut().zip(cells) {
                *width = (*width).max(text_width(cell));
            }
        }
    }

    /// `total_width(padding=4, with_border=True, outer_padding=indent)`: the
    /// padded columns plus the two border chars and the indentation on both
    /// sides, or the title's width if that is wider.
    fn total_width(&self) -> usize {
        let frame = 2 + 2 * self.indent;
        let columns: usize = self
            .max_widths
            .iter()
            .map(|width| width + CELL_PADDING)
            .sum();
        let title = text_width(self.title.as_deref().unwrap_or("None"));
        (columns + frame).max(title + frame)
    }

    /// `calculate_column_widths(padding=4, max_width)`: the padded columns
    /// scaled to fill `max_width` (rounded half to even like Python's
    /// `round()`), then corrected one column at a time until they sum to it.
    fn column_widths(&self, max_width: usize) -> Vec<usize> {
        let unscaled: Vec<usize> = self
            .max_widths
            .iter()
            .map(|width| width + CELL_PADDING)
            .collect();
        let scale = max_width as f64 / unscaled.iter().sum::<usize>() as f64;
        let mut scaled: Vec<i64> = unscaled
            .iter()
            .map(|&width| (scale * width as f64).round_ties_even() as i64)
            .collect();
        // Python walks the columns left to right taking one off each while
        // too wide, right to left adding one while too narrow.
        let off_by = scaled.iter().sum::<i64>() - max_width as i64;
        let step = off_by.signum();
        let order: Vec<usize> = if step > 0 {
            (0..scaled.len()).collect()
        } else {
            (0..scaled.len()).rev().collect()
        };
        for column in order
            .into_iter()
            .cycle()
            .take(off_by.unsigned_abs() as usize)
        {
            scaled[column] -= step;
        }
        scaled
            .into_iter()
            .map(|width| usize::try_from(width).unwrap_or(0))
            .collect()
    }

    /// `convert_to_vertical_table`: a section with headers and exactly one row
    /// becomes one `header | value` row per column.
    fn into_vertical(self) -> Section {
        match self.rows.as_slice() {
            [row] if !self.headers.is_empty() => {
                let mut vertical = Section {
                    title: self.title.clone(),
                    indent: self.indent,
                    ..Section::default()
                };
                for (header, cell) in self.headers.iter().zip(row) {
                    vertical.add_row(vec![header.clone(), cell.clone()]);
                }
                vertical
            }
            _ => self,
        }
    }
}

/// Builds the sections the way `TableFormatter._build_table` fills its
/// `MultiTable`: rows and headers always go to the newest section.
struct Builder {
    done: Vec<Section>,
    current: Section,
}

impl Builder {
    /// The title section `_build_table` opens for the whole response.
    fn new(title: &str) -> Self {
        Builder {
            done: Vec::new(),
            current: Section::new(Some(title), 0),
        }
    }

    fn into_sections(mut self) -> Vec<Section> {
        self.done.push(self.current);
        self.done
    }

    fn new_section(&mut self, title: Option<&str>, indent: usize) {
        let previous = mem::replace(&mut self.current, Section::new(title, indent));
        self.done.push(previous);
    }

    /// `_build_table`: falsy values are skipped; a titled value opens its own
    /// section.
    fn build(&mut self, title: Option<&str>, value: &Value, indent: usize) {
        if is_falsy(value) {
            return;
        }
        if let Some(title) = title {
            self.new_section(Some(title), indent);
        }
        self.fill(value, indent, title);
    }

    /// The body of `_build_table` once the section is open. A bare scalar
    /// adds nothing: only the title is shown.
    fn fill(&mut self, value: &Value, indent: usize, title: Option<&str>) {
        match value {
            Value::Array(items) if items.first().is_some_and(Value::is_object) => {
                self.add_list_of_dicts(items, indent, title);
            }
            Value::Array(items) => items.iter().for_each(|item| self.add_list_item(item)),
            Value::Object(map) => self.add_dict(map, indent),
            _ => {}
        }
    }

    /// One element of a list whose first element is not a dict: a scalar is a
    /// one-cell row, a list of scalars a row, any other list is built into
    /// the current section. Python iterates a dict here, so its row is its keys.
    fn add_list_item(&mut self, item: &Value) {
        match item {
            Value::Array(cells) if cells.iter().all(is_scalar) => {
                self.add_row(cells.iter().map(python_str).collect())
            }
            Value::Array(_) => self.build(None, item, 0),
            Value::Object(map) => self.add_row(map.keys().cloned().collect()),
            scalar => self.add_row(vec![python_str(scalar)]),
        }
    }

    /// `_build_sub_table_from_dict`: the scalar values as one row under their
    /// sorted keys (a lone scalar as a `key | value` row without header), then
    /// each non-scalar value as a nested section.
    fn add_dict(&mut self, map: &Map<String, Value>, indent: usize) {
        let (scalars, nested) = group_scalar_keys(map);
        match scalars.as_slice() {
            [] => {}
            [(key, value)] => self.add_row(vec![(*key).clone(), python_str(value)]),
            _ => {
                self.add_header(scalars.iter().map(|(key, _)| (*key).clone()).collect());
                self.add_row(scalars.iter().map(|(_, value)| python_str(value)).collect());
            }
        }
        for (key, value) in nested {
            self.build(Some(key), value, indent + 1);
        }
    }

    /// `_build_sub_table_from_list`: one row per dict under the union of their
    /// scalar keys (`""` where a dict lacks one). When the dicts have nested
    /// values, each dict after the first repeats the title and header so its
    /// nested sections follow its own row. (Python raises on non-dict
    /// elements here; they are rendered like elements of a plain list.)
    fn add_list_of_dicts(&mut self, items: &[Value], indent: usize, title: Option<&str>) {
        let (headers, nested) = group_scalar_keys_of_list(items);
        self.add_header(headers.clone());
        for (index, item) in items.iter().enumerate() {
            if index > 0 && !nested.is_empty() {
                self.new_section(title, indent);
                self.add_header(headers.clone());
            }
            let Some(map) = item.as_object() else {
                self.add_list_item(item);
                continue;
            };
            self.add_row(
                headers
                    .iter()
                    .map(|key| map.get(key).map_or_else(String::new, python_str))
                    .collect(),
            );
            for key in &nested {
                if let Some(value) = map.get(key) {
                    self.build(Some(key), value, indent + 1);
                }
            }
        }
    }

    fn add_header(&mut self, headers: Vec<String>) {
        self.match_columns(headers.len());
        self.current.add_header(headers);
    }

    fn add_row(&mut self, row: Vec<String>) {
        self.match_columns(row.len());
        self.current.add_row(row);
    }

    /// Python raises `ValueError("Row should have N elements…")` when a row's
    /// length differs from its section's (e.g. `[["a"], ["b", "c"]]`) and
    /// prints nothing; so that any JSON renders, such a row starts a new
    /// untitled section at the same indentation instead.
    fn match_columns(&mut self, count: usize) {
        if self
            .current
            .num_cols
            .is_some_and(|num_cols| num_cols != count)
        {
            self.new_section(Some(""), self.current.indent);
        }
    }
}

/// A dict's `(key, value)` pairs.
type Entries<'a> = Vec<(&'a String, &'a Value)>;

/// `_group_scalar_keys`: the dict's scalar and non-scalar entries, each sorted by key.
fn group_scalar_keys(map: &Map<String, Value>) -> (Entries<'_>, Entries<'_>) {
    let mut entries: Entries<'_> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries.into_iter().partition(|(_, value)| is_scalar(value))
}

/// `_group_scalar_keys_from_list`: the sorted union of the dicts' scalar keys
/// and of their non-scalar keys (a key can be in both).
fn group_scalar_keys_of_list(items: &[Value]) -> (Vec<String>, Vec<String>) {
    let mut scalars = BTreeSet::new();
    let mut nested = BTreeSet::new();
    for (key, value) in items.iter().filter_map(Value::as_object).flatten() {
        if is_scalar(value) {
            &mut scalars
        } else {
            &mut nested
        }
        .insert(key.clone());
    }
    (scalars.into_iter().collect(), nested.into_iter().collect())
}

/// `MultiTable.render`: flip single-row sections to vertical if the table is
/// wider than the terminal, then a dashed top line and every section at the
/// width of the widest.
fn render_sections(mut sections: Vec<Section>, terminal_width: usize, color: bool) -> String {
    let mut width = table_width(&sections);
    if width > terminal_width {
        sections = sections.into_iter().map(Section::into_vertical).collect();
        width = table_width(&sections);
    }
    let mut out = Output {
        text: String::new(),
        color,
    };
    out.write(&format!("{}\n", "-".repeat(width)));
    for section in &sections {
        render_section(&mut out, section, width);
    }
    out.text
}

/// `MultiTable._calculate_max_width`.
fn table_width(sections: &[Section]) -> usize {
    sections.iter().map(Section::total_width).max().unwrap_or(0)
}

/// `MultiTable._render_section`: title, column titles and rows, each line
/// framed by the section's indentation chars.
fn render_section(out: &mut Output, section: &Section, table_width: usize) {
    let width = table_width.saturating_sub(2 * section.indent);
    let indent = section.indent;
    if let Some(title) = section.title.as_deref().filter(|title| !title.is_empty()) {
        out.line(indent, &center_text(title, width, "|", "|"));
        if section.headers.is_empty() && section.rows.is_empty() {
            out.line(
                indent,
                &format!("+{}+", "-".repeat(width.saturating_sub(2))),
            );
        }
    }
    if !section.headers.is_empty() {
        let widths = section.column_widths(width);
        out.line(indent, &line_break(&widths));
        let cells = widths.iter().zip(&section.headers).enumerate();
        let line: String = cells
            .map(|(i, (&w, header))| center_text(header, w, left_edge(i), "|"))
            .collect();
        out.line(indent, &line);
    }
    if !section.rows.is_empty() {
        let widths = section.column_widths(width);
        if widths.is_empty() {
            return;
        }
        out.line(indent, &line_break(&widths));
        for row in &section.rows {
            let cells = widths.iter().zip(row).enumerate();
            let line: String = cells
                .map(|(i, (&w, cell))| out.row_cell(cell, w, left_edge(i)))
                .collect();
            out.line(indent, &line);
        }
        out.line(indent, &line_break(&widths));
    }
}

/// Only a row's first cell draws its left border.
fn left_edge(column: usize) -> &'static str {
    if column == 0 { "|" } else { "" }
}

/// `_write_line_break`: `+-----+------+`, one segment per column.
fn line_break(widths: &[usize]) -> String {
    let mut line = String::new();
    for (i, width) in widths.iter().enumerate() {
        let (edge, border) = if i == 0 { ("+", 2) } else { ("", 1) };
        line.push_str(edge);
        line.push_str(&"-".repeat(width.saturating_sub(border)));
        line.push('+');
    }
    line
}

/// `table.center_text`: `text` centred between the edges in `length` columns.
/// Python's arithmetic can go negative for text wider than the cell; `' ' * n`
/// then yields nothing, which `spaces` mirrors.
fn center_text(text: &str, length: usize, left_edge: &str, right_edge: &str) -> String {
    let text_length = text_width(text) as isize;
    let char_start = (length / 2) as isize - text_length / 2 - 1;
    let length_so_far = left_edge.len() as isize + char_start + text_length;
    let right_spaces = length as isize - right_edge.len() as isize - length_so_far;
    format!(
        "{left_edge}{}{text}{}{right_edge}",
        spaces(char_start),
        spaces(right_spaces)
    )
}

/// `table.align_left`: `styled` after two spaces of padding (none if the cell
/// is too narrow), filled to `length` columns; `plain` is its unstyled text.
fn align_left(
    styled: &str,
    plain: &str,
    length: usize,
    left_edge: &str,
    right_edge: &str,
) -> String {
    let text_length = text_width(plain);
    let padding = if text_length + 2 + left_edge.len() + right_edge.len() <= length {
        2
    } else {
        0
    };
    let length_so_far = left_edge.len() + padding + text_length;
    let fill = length as isize - length_so_far as isize - right_edge.len() as isize;
    format!(
        "{left_edge}{}{styled}{}{right_edge}",
        spaces(padding as isize),
        spaces(fill)
    )
}

/// Python's `' ' * n`, which is empty for negative `n`.
fn spaces(count: isize) -> String {
    " ".repeat(usize::try_from(count).unwrap_or(0))
}

/// The output stream. With colour the AWS CLI styles row cells and the
/// indentation chars, and its stdout is colorama's `autoreset` wrapper, which
/// writes `RESET_ALL` after every `write()` call; both are reproduced here.
struct Output {
    text: String,
    color: bool,
}

impl Output {
    fn write(&mut self, text: &str) {
        self.text.push_str(text);
        if self.color {
            self.text.push_str(RESET);
        }
    }

    /// `IndentedStream.write(line + '\n')`: four writes — the left
    /// indentation chars, the line, the right indentation chars, the newline.
    fn line(&mut self, indent: usize, line: &str) {
        let edge = if self.color { COLOR_INDENT_CHAR } else { "|" }.repeat(indent);
        self.write(&edge);
        self.write(line);
        self.write(&edge);
        self.write("\n");
    }

    /// One row cell, styled by `ColorizedStyler.style_row_element` with colour on.
    fn row_cell(&self, cell: &str, width: usize, left_edge: &str) -> String {
        if self.color {
            let styled = format!("{ROW_ELEMENT_STYLE}{cell}{RESET}");
            align_left(&styled, cell, width, left_edge, "|")
        } else {
            align_left(cell, cell, width, left_edge, "|")
        }
    }
}

/// `table.get_text_length`: characters whose `unicodedata.east_asian_width`
/// is Wide, Fullwidth or Ambiguous (`ü`, `é`, `°`, CJK, most emoji…) count
/// two columns, all others one.
fn text_width(text: &str) -> usize {
    text.chars().map(|c| if is_wide(c) { 2 } else { 1 }).sum()
}

/// Whether `c` is in [`WIDE_OR_AMBIGUOUS`].
fn is_wide(c: char) -> bool {
    let code = u32::from(c);
    let index = WIDE_OR_AMBIGUOUS.partition_point(|&(_, high)| high < code);
    WIDE_OR_AMBIGUOUS
        .get(index)
        .is_some_and(|&(low, _)| low <= code)
}

/// The assigned code points whose East Asian Width is W, F or A in Unicode
/// 14.0 (CPython 3.11's `unicodedata`), as inclusive ranges merged across
/// unassigned gaps. Generated with:
/// `[cp for cp in range(0x110000) if unicodedata.category(chr(cp)) != 'Cn'
/// and unicodedata.east_asian_width(chr(cp)) in 'WFA']`. Approximation:
/// CPython reports unassigned code points outside these ranges as `F` (two
/// columns); they count one column here.
#[rustfmt::skip]
const WIDE_OR_AMBIGUOUS: [(u32, u32); 232] = [
    (0xA1, 0xA1), (0xA4, 0xA4), (0xA7, 0xA8), (0xAA, 0xAA), (0xAD, 0xAE), (0xB0, 0xB4),
    (0xB6, 0xBA), (0xBC, 0xBF), (0xC6, 0xC6), (0xD0, 0xD0), (0xD7, 0xD8), (0xDE, 0xE1),
    (0xE6, 0xE6), (0xE8, 0xEA), (0xEC, 0xED), (0xF0, 0xF0), (0xF2, 0xF3), (0xF7, 0xFA),
    (0xFC, 0xFC), (0xFE, 0xFE), (0x101, 0x101), (0x111, 0x111), (0x113, 0x113), (0x11B, 0x11B),
    (0x126, 0x127), (0x12B, 0x12B), (0x131, 0x133), (0x138, 0x138), (0x13F, 0x142), (0x144, 0x144),
    (0x148, 0x14B), (0x14D, 0x14D), (0x152, 0x153), (0x166, 0x167), (0x16B, 0x16B), (0x1CE, 0x1CE),
    (0x1D0, 0x1D0), (0x1D2, 0x1D2), (0x1D4, 0x1D4), (0x1D6, 0x1D6), (0x1D8, 0x1D8), (0x1DA, 0x1DA),
    (0x1DC, 0x1DC), (0x251, 0x251), (0x261, 0x261), (0x2C4, 0x2C4), (0x2C7, 0x2C7), (0x2C9, 0x2CB),
    (0x2CD, 0x2CD), (0x2D0, 0x2D0), (0x2D8, 0x2DB), (0x2DD, 0x2DD), (0x2DF, 0x2DF), (0x300, 0x36F),
    (0x391, 0x3A9), (0x3B1, 0x3C1), (0x3C3, 0x3C9), (0x401, 0x401), (0x410, 0x44F), (0x451, 0x451),
    (0x1100, 0x115F), (0x2010, 0x2010), (0x2013, 0x2016), (0x2018, 0x2019), (0x201C, 0x201D),
    (0x2020, 0x2022), (0x2024, 0x2027), (0x2030, 0x2030), (0x2032, 0x2033), (0x2035, 0x2035),
    (0x203B, 0x203B), (0x203E, 0x203E), (0x2074, 0x2074), (0x207F, 0x207F), (0x2081, 0x2084),
    (0x20AC, 0x20AC), (0x2103, 0x2103), (0x2105, 0x2105), (0x2109, 0x2109), (0x2113, 0x2113),
    (0x2116, 0x2116), (0x2121, 0x2122), (0x2126, 0x2126), (0x212B, 0x212B), (0x2153, 0x2154),
    (0x215B, 0x215E), (0x2160, 0x216B), (0x2170, 0x2179), (0x2189, 0x2189), (0x2190, 0x2199),
    (0x21B8, 0x21B9), (0x21D2, 0x21D2), (0x21D4, 0x21D4), (0x21E7, 0x21E7), (0x2200, 0x2200),
    (0x2202, 0x2203), (0x2207, 0x2208), (0x220B, 0x220B), (0x220F, 0x220F), (0x2211, 0x2211),
    (0x2215, 0x2215), (0x221A, 0x221A), (0x221D, 0x2220), (0x2223, 0x2223), (0x2225, 0x2225),
    (0x2227, 0x222C), (0x222E, 0x222E), (0x2234, 0x2237), (0x223C, 0x223D), (0x2248, 0x2248),
    (0x224C, 0x224C), (0x2252, 0x2252), (0x2260, 0x2261), (0x2264, 0x2267), (0x226A, 0x226B),
    (0x226E, 0x226F), (0x2282, 0x2283), (0x2286, 0x2287), (0x2295, 0x2295), (0x2299, 0x2299),
    (0x22A5, 0x22A5), (0x22BF, 0x22BF), (0x2312, 0x2312), (0x231A, 0x231B), (0x2329, 0x232A),
    (0x23E9, 0x23EC), (0x23F0, 0x23F0), (0x23F3, 0x23F3), (0x2460, 0x24E9), (0x24EB, 0x254B),
    (0x2550, 0x2573), (0x2580, 0x258F), (0x2592, 0x2595), (0x25A0, 0x25A1), (0x25A3, 0x25A9),
    (0x25B2, 0x25B3), (0x25B6, 0x25B7), (0x25BC, 0x25BD), (0x25C0, 0x25C1), (0x25C6, 0x25C8),
    (0x25CB, 0x25CB), (0x25CE, 0x25D1), (0x25E2, 0x25E5), (0x25EF, 0x25EF), (0x25FD, 0x25FE),
    (0x2605, 0x2606), (0x2609, 0x2609), (0x260E, 0x260F), (0x2614, 0x2615), (0x261C, 0x261C),
    (0x261E, 0x261E), (0x2640, 0x2640), (0x2642, 0x2642), (0x2648, 0x2653), (0x2660, 0x2661),
    (0x2663, 0x2665), (0x2667, 0x266A), (0x266C, 0x266D), (0x266F, 0x266F), (0x267F, 0x267F),
    (0x2693, 0x2693), (0x269E, 0x269F), (0x26A1, 0x26A1), (0x26AA, 0x26AB), (0x26BD, 0x26BF),
    (0x26C4, 0x26E1), (0x26E3, 0x26E3), (0x26E8, 0x26FF), (0x2705, 0x2705), (0x270A, 0x270B),
    (0x2728, 0x2728), (0x273D, 0x273D), (0x274C, 0x274C), (0x274E, 0x274E), (0x2753, 0x2755),
    (0x2757, 0x2757), (0x2776, 0x277F), (0x2795, 0x2797), (0x27B0, 0x27B0), (0x27BF, 0x27BF),
    (0x2B1B, 0x2B1C), (0x2B50, 0x2B50), (0x2B55, 0x2B59), (0x2E80, 0x303E), (0x3041, 0x4DBF),
    (0x4E00, 0xA4C6), (0xA960, 0xA97C), (0xAC00, 0xD7A3), (0xE000, 0xFAD9), (0xFE00, 0xFE19),
    (0xFE30, 0xFE6B), (0xFF01, 0xFF60), (0xFFE0, 0xFFE6), (0xFFFD, 0xFFFD), (0x16FE0, 0x1B2FB),
    (0x1F004, 0x1F004), (0x1F0CF, 0x1F0CF), (0x1F100, 0x1F10A), (0x1F110, 0x1F12D),
    (0x1F130, 0x1F169), (0x1F170, 0x1F1AC), (0x1F200, 0x1F320), (0x1F32D, 0x1F335),
    (0x1F337, 0x1F37C), (0x1F37E, 0x1F393), (0x1F3A0, 0x1F3CA), (0x1F3CF, 0x1F3D3),
    (0x1F3E0, 0x1F3F0), (0x1F3F4, 0x1F3F4), (0x1F3F8, 0x1F43E), (0x1F440, 0x1F440),
    (0x1F442, 0x1F4FC), (0x1F4FF, 0x1F53D), (0x1F54B, 0x1F54E), (0x1F550, 0x1F567),
    (0x1F57A, 0x1F57A), (0x1F595, 0x1F596), (0x1F5A4, 0x1F5A4), (0x1F5FB, 0x1F64F),
    (0x1F680, 0x1F6C5), (0x1F6CC, 0x1F6CC), (0x1F6D0, 0x1F6D2), (0x1F6D5, 0x1F6DF),
    (0x1F6EB, 0x1F6EC), (0x1F6F4, 0x1F6FC), (0x1F7E0, 0x1F7F0), (0x1F90C, 0x1F93A),
    (0x1F93C, 0x1F945), (0x1F947, 0x1F9FF), (0x1FA70, 0x1FAF6), (0x20000, 0x3134A),
    (0xE0100, 0x10FFFD),
];

// The goldens are what awscli 1.46.3's own formatter prints (venv /tmp/awsvenv):
//   python -c 'import argparse,io,json,sys; from awscli.formatter import TableFormatter
//   f = TableFormatter(argparse.Namespace(query=None, color="off")); f.table._terminal_width = 80
//   out = io.StringIO(); f._format_response("DescribeJob", json.loads(sys.argv[1]), out)
//   sys.stdout.write(out.getvalue())' "$JSON"
// (`_format_response` is what the formatter runs once `--query` is applied.)
// With colour: color="on", `out` wrapped in `colorama.ansitowin32.AnsiToWin32(
// out, convert=False, strip=False, autoreset=True).stream` as the AWS CLI's
// stdout is, and the result written to `sys.__stdout__`; ESC is shown as `\e`.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::text::tests::{DOCS_EXAMPLE, FULL_RESPONSE, NON_ASCII_RESPONSE};

    fn table(json: &str, width: usize) -> String {
        render(
            "DescribeJob",
            &serde_json::from_str(json).expect("test JSON"),
            width,
            false,
        )
    }

    fn colored(json: &str, width: usize) -> String {
        render(
            "DescribeJob",
            &serde_json::from_str(json).expect("test JSON"),
            width,
            true,
        )
        .replace('\x1b', r"\e")
    }

    const FULL_TABLE: &str = r#"-----------------------------------------------------------------------------
|                                DescribeJob                                |
+--------------------+------------------------------------------------------+
|  documentSource    |  https://s3.amazonaws.com/bucket/job.json            |
+--------------------+------------------------------------------------------+
||                                   job                                   ||
|+------------------+------------------------------------------------------+|
||  comment         |  bad batch                                           ||
||  completedAt     |  1560790000.001                                      ||
||  createdAt       |  1560787022.733                                      ||
||  description     |  firmware 2.0                                        ||
||  forceCanceled   |  False                                               ||
||  isConcurrent    |  True                                                ||
||  jobArn          |  arn:aws:iot:us-east-1:123456789012:job/full-job     ||
||  jobId           |  full-job                                            ||
||  jobTemplateArn  |  arn:aws:iot:us-east-1:123456789012:jobtemplate/ota  ||
||  lastUpdatedAt   |  1560787026.294                                      ||
||  namespaceId     |  greengrass                                          ||
||  reasonCode      |  ROLLBACK                                            ||
||  status          |  IN_PROGRESS                                         ||
||  targetSelection |  SNAPSHOT                                            ||
|+------------------+------------------------------------------------------+|
|||                              abortConfig                              |||
||+-----------------------------------------------------------------------+||
||||                            criteriaList                             ||||
|||+-----------------------------------------------+---------------------+|||
||||  action                                       |  CANCEL             ||||
||||  failureType                                  |  TIMED_OUT          ||||
||||  minNumberOfExecutedThings                    |  5                  ||||
||||  thresholdPercentage                          |  10.99              ||||
|||+-----------------------------------------------+---------------------+|||
|||                      destinationPackageVersions                       |||
||+-----------------------------------------------------------------------+||
|||  arn:aws:iot:us-east-1:123456789012:package/fw/version/2.0            |||
||+-----------------------------------------------------------------------+||
|||                          documentParameters                           |||
||+----------------------------+------------------------------------------+||
|||  firmwareUrl               |  s3://bucket/fw.bin                      |||
||+----------------------------+------------------------------------------+||
|||                       jobExecutionsRetryConfig                        |||
||+-----------------------------------------------------------------------+||
||||                            criteriaList                             ||||
|||+---------------------------------------------+-----------------------+|||
||||  failureType                                |  FAILED               ||||
||||  numberOfRetries                            |  2                    ||||
|||+---------------------------------------------+-----------------------+|||
|||                      jobExecutionsRolloutConfig                       |||
||+----------------------------------------------------+------------------+||
|||  maximumPerMinute                                  |  100             |||
||+----------------------------------------------------+------------------+||
||||                           exponentialRate                           ||||
|||+---------------------------------------------------+-----------------+|||
||||  baseRatePerMinute                                |  5              ||||
||||  incrementFactor                                  |  1.5            ||||
|||+---------------------------------------------------+-----------------+|||
|||||                       rateIncreaseCriteria                        |||||
||||+------------------------------------------------------+------------+||||
|||||  numberOfNotifiedThings                              |  10        |||||
|||||  numberOfSucceededThings                             |  8         |||||
||||+------------------------------------------------------+------------+||||
|||                           jobProcessDetails                           |||
||+------------------------------------------------------------+----------+||
|||  numberOfCanceledThings                                    |  1       |||
|||  numberOfFailedThings                                      |  3       |||
|||  numberOfInProgressThings                                  |  6       |||
|||  numberOfQueuedThings                                      |  5       |||
|||  numberOfRejectedThings                                    |  4       |||
|||  numberOfRemovedThings                                     |  7       |||
|||  numberOfSucceededThings                                   |  2       |||
|||  numberOfTimedOutThings                                    |  8       |||
||+------------------------------------------------------------+----------+||
||||                          processingTargets                          ||||
|||+---------------------------------------------------------------------+|||
||||  arn:aws:iot:us-east-1:123456789012:thing/pi                        ||||
|||+---------------------------------------------------------------------+|||
|||                          presignedUrlConfig                           |||
||+-------------------+---------------------------------------------------+||
|||  expiresInSec     |  3600                                             |||
|||  roleArn          |  arn:aws:iam::123456789012:role/jobs              |||
||+-------------------+---------------------------------------------------+||
|||                         scheduledJobRollouts                          |||
||+---------------------------+-------------------------------------------+||
|||  startTime                |  2030-01-06T00:00                         |||
||+---------------------------+-------------------------------------------+||
|||                           schedulingConfig                            |||
||+-----------------------------+-----------------------------------------+||
|||  endBehavior                |  STOP_ROLLOUT                           |||
|||  endTime                    |  2030-01-02T10:00                       |||
|||  startTime                  |  2030-01-01T10:00                       |||
||+-----------------------------+-----------------------------------------+||
||||                         maintenanceWindows                          ||||
|||+--------------------------------+------------------------------------+|||
||||  durationInMinutes             |  60                                ||||
||||  startTime                     |  cron(0 0 ? * MON *)               ||||
|||+--------------------------------+------------------------------------+|||
|||                                targets                                |||
||+-----------------------------------------------------------------------+||
|||  arn:aws:iot:us-east-1:123456789012:thinggroup/fleet                  |||
||+-----------------------------------------------------------------------+||
|||                             timeoutConfig                             |||
||+-----------------------------------------------------------+-----------+||
|||  inProgressTimeoutInMinutes                               |  30       |||
||+-----------------------------------------------------------+-----------+||
"#;

    const DOCS_TABLE: &str = r#"--------------------------------------------------------------------------------
|                                  DescribeJob                                 |
+------------------------------------------------------------------------------+
||                                     job                                    ||
|+-----------------+----------------------------------------------------------+|
||  createdAt      |  1560787022.733                                          ||
||  description    |  example job test                                        ||
||  jobArn         |  arn:aws:iot:us-west-2:123456789012:job/example-job-01   ||
||  jobId          |  example-job-01                                          ||
||  lastUpdatedAt  |  1560787026.294                                          ||
||  status         |  IN_PROGRESS                                             ||
||  targetSelection|  SNAPSHOT                                                ||
|+-----------------+----------------------------------------------------------+|
|||                             jobProcessDetails                            |||
||+--------------------------------------------------------------+-----------+||
|||  numberOfCanceledThings                                      |  0        |||
|||  numberOfFailedThings                                        |  0        |||
|||  numberOfInProgressThings                                    |  0        |||
|||  numberOfQueuedThings                                        |  1        |||
|||  numberOfRejectedThings                                      |  0        |||
|||  numberOfRemovedThings                                       |  0        |||
|||  numberOfSucceededThings                                     |  0        |||
|||  numberOfTimedOutThings                                      |  0        |||
||+--------------------------------------------------------------+-----------+||
|||                                  targets                                 |||
||+--------------------------------------------------------------------------+||
|||  arn:aws:iot:us-west-2:123456789012:thing/MyRaspberryPi                  |||
||+--------------------------------------------------------------------------+||
"#;

    const DOCS_TABLE_212: &str = r#"--------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------
|                                                                                                    DescribeJob                                                                                                   |
+------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------+
||                                                                                                       job                                                                                                      ||
|+---------------------+------------------------+------------------------------------------------------------------------+----------------------+----------------------+------------------+-----------------------+|
||      createdAt      |      description       |                                jobArn                                  |        jobId         |    lastUpdatedAt     |     status       |    targetSelection    ||
|+---------------------+------------------------+------------------------------------------------------------------------+----------------------+----------------------+------------------+-----------------------+|
||  1560787022.733     |  example job test      |  arn:aws:iot:us-west-2:123456789012:job/example-job-01                 |  example-job-01      |  1560787026.294      |  IN_PROGRESS     |  SNAPSHOT             ||
|+---------------------+------------------------+------------------------------------------------------------------------+----------------------+----------------------+------------------+-----------------------+|
|||                                                                                               jobProcessDetails                                                                                              |||
||+------------------------+-----------------------+---------------------------+-----------------------+-------------------------+------------------------+---------------------------+--------------------------+||
||| numberOfCanceledThings | numberOfFailedThings  | numberOfInProgressThings  | numberOfQueuedThings  | numberOfRejectedThings  | numberOfRemovedThings  |  numberOfSucceededThings  | numberOfTimedOutThings   |||
||+------------------------+-----------------------+---------------------------+-----------------------+-------------------------+------------------------+---------------------------+--------------------------+||
|||  0                     |  0                    |  0                        |  1                    |  0                      |  0                     |  0                        |  0                       |||
||+------------------------+-----------------------+---------------------------+-----------------------+-------------------------+------------------------+---------------------------+--------------------------+||
|||                                                                                                    targets                                                                                                   |||
||+--------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------+||
|||  arn:aws:iot:us-west-2:123456789012:thing/MyRaspberryPi                                                                                                                                                      |||
||+--------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------+||
"#;

    const DOCS_TABLE_COLOR: &str = r#"--------------------------------------------------------------------------------
\e[0m\e[0m|                                  DescribeJob                                 |\e[0m\e[0m
\e[0m\e[0m+------------------------------------------------------------------------------+\e[0m\e[0m
\e[0m\e[2m\e[33m|\e[0m\e[0m|                                     job                                    |\e[0m\e[2m\e[33m|\e[0m\e[0m
\e[0m\e[2m\e[33m|\e[0m\e[0m+-----------------+----------------------------------------------------------+\e[0m\e[2m\e[33m|\e[0m\e[0m
\e[0m\e[2m\e[33m|\e[0m\e[0m|  \e[1m\e[34mcreatedAt\e[0m      |  \e[1m\e[34m1560787022.733\e[0m                                          |\e[0m\e[2m\e[33m|\e[0m\e[0m
\e[0m\e[2m\e[33m|\e[0m\e[0m|  \e[1m\e[34mdescription\e[0m    |  \e[1m\e[34mexample job test\e[0m                                        |\e[0m\e[2m\e[33m|\e[0m\e[0m
\e[0m\e[2m\e[33m|\e[0m\e[0m|  \e[1m\e[34mjobArn\e[0m         |  \e[1m\e[34marn:aws:iot:us-west-2:123456789012:job/example-job-01\e[0m   |\e[0m\e[2m\e[33m|\e[0m\e[0m
\e[0m\e[2m\e[33m|\e[0m\e[0m|  \e[1m\e[34mjobId\e[0m          |  \e[1m\e[34mexample-job-01\e[0m                                          |\e[0m\e[2m\e[33m|\e[0m\e[0m
\e[0m\e[2m\e[33m|\e[0m\e[0m|  \e[1m\e[34mlastUpdatedAt\e[0m  |  \e[1m\e[34m1560787026.294\e[0m                                          |\e[0m\e[2m\e[33m|\e[0m\e[0m
\e[0m\e[2m\e[33m|\e[0m\e[0m|  \e[1m\e[34mstatus\e[0m         |  \e[1m\e[34mIN_PROGRESS\e[0m                                             |\e[0m\e[2m\e[33m|\e[0m\e[0m
\e[0m\e[2m\e[33m|\e[0m\e[0m|  \e[1m\e[34mtargetSelection\e[0m|  \e[1m\e[34mSNAPSHOT\e[0m                                                |\e[0m\e[2m\e[33m|\e[0m\e[0m
\e[0m\e[2m\e[33m|\e[0m\e[0m+-----------------+----------------------------------------------------------+\e[0m\e[2m\e[33m|\e[0m\e[0m
\e[0m\e[2m\e[33m|\e[0m\e[2m\e[33m|\e[0m\e[0m|                             jobProcessDetails                            |\e[0m\e[2m\e[33m|\e[0m\e[2m\e[33m|\e[0m\e[0m
\e[0m\e[2m\e[33m|\e[0m\e[2m\e[33m|\e[0m\e[0m+--------------------------------------------------------------+-----------+\e[0m\e[2m\e[33m|\e[0m\e[2m\e[33m|\e[0m\e[0m
\e[0m\e[2m\e[33m|\e[0m\e[2m\e[33m|\e[0m\e[0m|  \e[1m\e[34mnumberOfCanceledThings\e[0m                                      |  \e[1m\e[34m0\e[0m        |\e[0m\e[2m\e[33m|\e[0m\e[2m\e[33m|\e[0m\e[0m
\e[0m\e[2m\e[33m|\e[0m\e[2m\e[33m|\e[0m\e[0m|  \e[1m\e[34mnumberOfFailedThings\e[0m                                        |  \e[1m\e[34m0\e[0m        |\e[0m\e[2m\e[33m|\e[0m\e[2m\e[33m|\e[0m\e[0m
\e[0m\e[2m\e[33m|\e[0m\e[2m\e[33m|\e[0m\e[0m|  \e[1m\e[34mnumberOfInProgressThings\e[0m                                    |  \e[1m\e[34m0\e[0m        |\e[0m\e[2m\e[33m|\e[0m\e[2m\e[33m|\e[0m\e[0m
\e[0m\e[2m\e[33m|\e[0m\e[2m\e[33m|\e[0m\e[0m|  \e[1m\e[34mnumberOfQueuedThings\e[0m                                        |  \e[1m\e[34m1\e[0m        |\e[0m\e[2m\e[33m|\e[0m\e[2m\e[33m|\e[0m\e[0m
\e[0m\e[2m\e[33m|\e[0m\e[2m\e[33m|\e[0m\e[0m|  \e[1m\e[34mnumberOfRejectedThings\e[0m                                      |  \e[1m\e[34m0\e[0m        |\e[0m\e[2m\e[33m|\e[0m\e[2m\e[33m|\e[0m\e[0m
\e[0m\e[2m\e[33m|\e[0m\e[2m\e[33m|\e[0m\e[0m|  \e[1m\e[34mnumberOfRemovedThings\e[0m                                       |  \e[1m\e[34m0\e[0m        |\e[0m\e[2m\e[33m|\e[0m\e[2m\e[33m|\e[0m\e[0m
\e[0m\e[2m\e[33m|\e[0m\e[2m\e[33m|\e[0m\e[0m|  \e[1m\e[34mnumberOfSucceededThings\e[0m                                     |  \e[1m\e[34m0\e[0m        |\e[0m\e[2m\e[33m|\e[0m\e[2m\e[33m|\e[0m\e[0m
\e[0m\e[2m\e[33m|\e[0m\e[2m\e[33m|\e[0m\e[0m|  \e[1m\e[34mnumberOfTimedOutThings\e[0m                                      |  \e[1m\e[34m0\e[0m        |\e[0m\e[2m\e[33m|\e[0m\e[2m\e[33m|\e[0m\e[0m
\e[0m\e[2m\e[33m|\e[0m\e[2m\e[33m|\e[0m\e[0m+--------------------------------------------------------------+-----------+\e[0m\e[2m\e[33m|\e[0m\e[2m\e[33m|\e[0m\e[0m
\e[0m\e[2m\e[33m|\e[0m\e[2m\e[33m|\e[0m\e[0m|                                  targets                                 |\e[0m\e[2m\e[33m|\e[0m\e[2m\e[33m|\e[0m\e[0m
\e[0m\e[2m\e[33m|\e[0m\e[2m\e[33m|\e[0m\e[0m+--------------------------------------------------------------------------+\e[0m\e[2m\e[33m|\e[0m\e[2m\e[33m|\e[0m\e[0m
\e[0m\e[2m\e[33m|\e[0m\e[2m\e[33m|\e[0m\e[0m|  \e[1m\e[34marn:aws:iot:us-west-2:123456789012:thing/MyRaspberryPi\e[0m                  |\e[0m\e[2m\e[33m|\e[0m\e[2m\e[33m|\e[0m\e[0m
\e[0m\e[2m\e[33m|\e[0m\e[2m\e[33m|\e[0m\e[0m+--------------------------------------------------------------------------+\e[0m\e[2m\e[33m|\e[0m\e[2m\e[33m|\e[0m\e[0m
\e[0m"#;

    #[test]
    fn full_response_at_width_80_turns_vertical() {
        assert_eq!(table(FULL_RESPONSE, 80), FULL_TABLE);
    }

    #[test]
    fn full_response_at_width_200_is_still_vertical() {
        // Unflipped, the table would be 300 columns wide.
        assert_eq!(table(FULL_RESPONSE, 200), FULL_TABLE);
    }

    #[test]
    fn docs_example_turns_vertical_only_when_wider_than_terminal() {
        assert_eq!(table(DOCS_EXAMPLE, 80), DOCS_TABLE);
        assert_eq!(table(DOCS_EXAMPLE, 211), DOCS_TABLE);
        assert_eq!(table(DOCS_EXAMPLE, 212), DOCS_TABLE_212);
    }

    const NON_ASCII_TABLE_80: &str = r#"------------------------------------------------------
|                     DescribeJob                    |
+----------------------------------------------------+
||                        job                       ||
|+------------------------------+--------+----------+|
||          description         | jobId  | status   ||
|+------------------------------+--------+----------+|
||  Firmware für Geräte ✓ 固件 |  fw-2  |  QUEUED  ||
|+------------------------------+--------+----------+|
|||                      タグ                      |||
||+---------------------------+--------------------+||
|||  名前                     |  値                |||
||+---------------------------+--------------------+||
"#;

    const NON_ASCII_TABLE_30: &str = r#"--------------------------------------------------
|                   DescribeJob                  |
+------------------------------------------------+
||                      job                     ||
|+--------------+-------------------------------+|
||  description |  Firmware für Geräte ✓ 固件  ||
||  jobId       |  fw-2                         ||
||  status      |  QUEUED                       ||
|+--------------+-------------------------------+|
|||                    タグ                    |||
||+------------------------+-------------------+||
|||  名前                  |  値               |||
||+------------------------+-------------------+||
"#;

    #[test]
    fn non_ascii_counts_east_asian_wide_and_ambiguous_as_two() {
        assert_eq!(table(NON_ASCII_RESPONSE, 80), NON_ASCII_TABLE_80);
        assert_eq!(table(NON_ASCII_RESPONSE, 30), NON_ASCII_TABLE_30);
    }

    const QUERIES: &[(&str, &str)] = &[
        (
            r#"["arn:aws:iot:us-east-1:123456789012:thinggroup/fleet"]"#,
            r#"---------------------------------------------------------
|                      DescribeJob                      |
+-------------------------------------------------------+
|  arn:aws:iot:us-east-1:123456789012:thinggroup/fleet  |
+-------------------------------------------------------+
"#,
        ),
        (
            r#"["a", "b", 3, null]"#,
            r#"-------------
|DescribeJob|
+-----------+
|  a        |
|  b        |
|  3        |
|  None     |
+-----------+
"#,
        ),
        (
            r#"[["a", "IN_PROGRESS"]]"#,
            r#"----------------------
|     DescribeJob    |
+----+---------------+
|  a |  IN_PROGRESS  |
+----+---------------+
"#,
        ),
        (
            r#"[["a", "IN_PROGRESS"], ["b", "QUEUED"]]"#,
            r#"----------------------
|     DescribeJob    |
+----+---------------+
|  a |  IN_PROGRESS  |
|  b |  QUEUED       |
+----+---------------+
"#,
        ),
        (
            r#"{"id": "x", "status": "IN_PROGRESS", "done": 2}"#,
            r#"-------------------------------
|         DescribeJob         |
+-------+-----+---------------+
| done  | id  |    status     |
+-------+-----+---------------+
|  2    |  x  |  IN_PROGRESS  |
+-------+-----+---------------+
"#,
        ),
        (
            r#"[{"failureType": "FAILED", "numberOfRetries": 2}, {"failureType": "TIMED_OUT", "action": "CANCEL", "numberOfRetries": 0}]"#,
            r#"----------------------------------------------
|                 DescribeJob                |
+--------+---------------+-------------------+
| action |  failureType  |  numberOfRetries  |
+--------+---------------+-------------------+
|        |  FAILED       |  2                |
|  CANCEL|  TIMED_OUT    |  0                |
+--------+---------------+-------------------+
"#,
        ),
        (
            r#"[10.99, 1.5, 1560787022.733, 1560787022.0, 1e16, 0.00001]"#,
            r#"--------------------
|    DescribeJob   |
+------------------+
|  10.99           |
|  1.5             |
|  1560787022.733  |
|  1560787022.0    |
|  1e+16           |
|  1e-05           |
+------------------+
"#,
        ),
        (
            r#"{"jobs": [{"jobId": "a", "targets": ["t1"]}, {"jobId": "b", "targets": ["t2"]}]}"#,
            r#"-------------
|DescribeJob|
+-----------+
||  jobs   ||
|+---------+|
||  jobId  ||
|+---------+|
||  a      ||
|+---------+|
|||targets|||
||+-------+||
|||  t1   |||
||+-------+||
||  jobs   ||
|+---------+|
||  jobId  ||
|+---------+|
||  b      ||
|+---------+|
|||targets|||
||+-------+||
|||  t2   |||
||+-------+||
"#,
        ),
        (
            r#"{"a": {}, "b": [], "c": 0, "d": null, "e": ""}"#,
            r#"--------------------
|    DescribeJob   |
+---+--------+-----+
| c |   d    |  e  |
+---+--------+-----+
|  0|  None  |     |
+---+--------+-----+
"#,
        ),
        (
            r#"[{"a": 1}, {"a": {"b": 2}}]"#,
            r#"--------------
| DescribeJob|
+------------+
|      a     |
+------------+
|  1         |
+------------+
||     a    ||
|+----------+|
| DescribeJob|
+------------+
|      a     |
+------------+
|  {'b': 2}  |
+------------+
||     a    ||
|+----+-----+|
||  b |  2  ||
|+----+-----+|
"#,
        ),
        (
            r#"["a", {"x": 1}]"#,
            r#"-------------
|DescribeJob|
+-----------+
|  a        |
|  x        |
+-----------+
"#,
        ),
        (
            r#"[{}]"#,
            r#"-------------
|DescribeJob|
"#,
        ),
        (
            r#"[[]]"#,
            r#"-------------
|DescribeJob|
"#,
        ),
        (
            r#"[[{"a": [1]}, {"a": [2]}]]"#,
            r#"-------------
|DescribeJob|
||    a    ||
|+---------+|
||  1      ||
|+---------+|
||    a    ||
|+---------+|
||  2      ||
|+---------+|
"#,
        ),
        (
            r#"[[{"x": 1}, {"x": 2}]]"#,
            r#"-------------
|DescribeJob|
+-----------+
|     x     |
+-----------+
|  1        |
|  2        |
+-----------+
"#,
        ),
    ];
    const HASH_COLOR: &str = r#"-------------------------------
\e[0m\e[0m|         DescribeJob         |\e[0m\e[0m
\e[0m\e[0m+-------+-----+---------------+\e[0m\e[0m
\e[0m\e[0m| done  | id  |    status     |\e[0m\e[0m
\e[0m\e[0m+-------+-----+---------------+\e[0m\e[0m
\e[0m\e[0m|  \e[1m\e[34m2\e[0m    |  \e[1m\e[34mx\e[0m  |  \e[1m\e[34mIN_PROGRESS\e[0m  |\e[0m\e[0m
\e[0m\e[0m+-------+-----+---------------+\e[0m\e[0m
\e[0m"#;

    #[test]
    fn query_results() {
        for (json, expected) in QUERIES {
            assert_eq!(table(json, 80), *expected, "{json}");
        }
    }

    const TITLE_ONLY: &str = r#"-------------
|DescribeJob|
+-----------+
"#;

    #[test]
    fn scalars_show_only_the_title() {
        for json in [r#""full-job""#, "3600", "1.5", "true"] {
            assert_eq!(table(json, 80), TITLE_ONLY, "{json}");
        }
    }

    /// awscli raises `ValueError: Row should have 1 elements, instead it has
    /// 2` here and prints nothing; this expected output is ours, not awscli's.
    const DIFFERING_ROW_LENGTHS: &str = r#"-------------
|DescribeJob|
+-----------+
|  a        |
+-----------+
+----+------+
|  b |  c   |
+----+------+
"#;

    #[test]
    fn inputs_the_aws_cli_rejects_still_render() {
        assert_eq!(table(r#"[["a"], ["b", "c"]]"#, 80), DIFFERING_ROW_LENGTHS);
        // TypeError (a string where a dict was expected), ValueError.
        for (json, cell) in [
            (r#"[{"a": 1}, "x", [2, [3]]]"#, "|  3 "),
            (r#"[1, [2, 3], {"b": [{}]}]"#, "|  b "),
        ] {
            assert!(table(json, 0).contains(cell), "{json}");
        }
    }

    #[test]
    fn colour_matches_colorama_output() {
        assert_eq!(colored(DOCS_EXAMPLE, 80), DOCS_TABLE_COLOR);
        assert_eq!(
            colored(r#"{"id": "x", "status": "IN_PROGRESS", "done": 2}"#, 80),
            HASH_COLOR
        );
    }

    #[test]
    fn falsy_values_print_nothing() {
        for json in ["null", "false", "0", "0.0", r#""""#, "[]", "{}"] {
            assert_eq!(table(json, 80), "", "{json}");
        }
    }
}
