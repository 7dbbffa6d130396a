//! CSV bytes → CsvSource → map_chunk with a fixed mapping. The first byte picks the
//! dialect and whether the fixed header is prepended (so most inputs reach the mapper).
#![no_main]

use std::io::Cursor;

use cdp_backfill::source::csv::{CsvOptions, CsvSource};
use cdp_backfill::source::{Format, Opened, Stream};
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
    let stream: Stream = Box::new(Cursor::new(bytes));
    let Ok(src) = CsvSource::open(info.clone(), stream, opts) else {
        return;
    };
    let mut opened = Opened::Csv(src);
    map_all(&mut opened, &info, &spec(CSV_MAPPING));
});
