//! CSV bytes → CsvSource → map_chunk with a fixed mapping. The first byte picks the
//! dialect and whether the fixed header is prepended (so most inputs reach the mapper).
//! Then the same bytes are read twice more, parsed by the reader (`fill`) and scanned by
//! it and parsed by the chunk (`fill_deferred` + `materialize`, what the pipeline does
//! with three or more mapper threads): every row, offset, line and chunk end must agree.
#![no_main]

use std::io::Cursor;

use cdp_backfill::source::csv::{CsvChunk, CsvOptions, CsvSource};
use cdp_backfill::source::{ColumnRef, Field, Format, Opened, Position, Row, Stream};
use cdp_backfill_fuzz::{input, map_all, spec, CSV_HEADER, CSV_MAPPING};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = Vec::with_capacity(rest.len() + CSV_HEADER.len());
    if sel & 1 == 0 {
        bytes.extend_from_slice(CSV_HEADER);
    }
    bytes.extend_from_slice(rest);
    let opts = CsvOptions {
        delimiter: if sel & 2 == 0 { b',' } else { b'\t' },
        quote: if sel & 4 == 0 { b'"' } else { b'\'' },
        has_header: sel & 8 == 0,
        max_record_bytes: 1 << 20,
    };
    let info = input(Format::Csv);
    let stream: Stream = Box::new(Cursor::new(bytes.clone()));
    let Ok(src) = CsvSource::open(info.clone(), stream, opts) else {
        return;
    };
    let mut opened = Opened::Csv(src);
    map_all(&mut opened, &info, &spec(CSV_MAPPING));
    let rows = sel >> 4 & 7;
    assert_eq!(
        read(&bytes, opts, rows as usize + 1, false),
        read(&bytes, opts, rows as usize + 1, true),
        "parsing and scanning disagree"
    );
});

/// One chunk as read: its rows (fields, offset, line) and where it ends.
type Read = (Vec<(Vec<Vec<u8>>, u64, u64)>, Position);

/// Every chunk of `bytes`, `max_rows` rows at a time, with `fill` or (`defer`)
/// `fill_deferred` + `materialize`; `None` at the first error.
fn read(bytes: &[u8], opts: CsvOptions, max_rows: usize, defer: bool) -> Option<Vec<Read>> {
    let info = input(Format::Csv);
    let stream: Stream = Box::new(Cursor::new(bytes.to_vec()));
    let mut src = CsvSource::open(info.clone(), stream, opts).ok()?;
    let mut chunk = CsvChunk::new(info, src.header().clone());
    let mut out = Vec::new();
    for _ in 0..100_000 {
        if defer {
            src.fill_deferred(&mut chunk, max_rows).ok()?;
            chunk
                .materialize()
                .expect("a scanned block parses as scanned");
        } else {
            src.fill(&mut chunk, max_rows).ok()?;
        }
        if chunk.len == 0 {
            return Some(out);
        }
        let rows = (0..chunk.len)
            .map(|i| {
                let row = chunk.row(i);
                let mut fields = Vec::new();
                for c in 0.. {
                    match row.field(&ColumnRef::Index(c)) {
                        Field::Text(b) => fields.push(b.to_vec()),
                        Field::Raw(b) => fields.push(b.to_vec()),
                        _ => break,
                    }
                }
                (fields, chunk.offsets[i], row.line())
            })
            .collect();
        out.push((rows, chunk.end));
    }
    panic!("the source never reached the end of a small input");
}
