//! NDJSON bytes → NdjsonSource → map_chunk with a fixed mapping of keys, dotted paths
//! and JSON pointers.
#![no_main]

use std::io::Cursor;

use cdp_backfill::source::ndjson::NdjsonSource;
use cdp_backfill::source::{Format, Opened, Stream};
use cdp_backfill_fuzz::{input, map_all, spec, NDJSON_MAPPING};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let info = input(Format::Ndjson);
    let stream: Stream = Box::new(Cursor::new(data.to_vec()));
    let Ok(src) = NdjsonSource::open(info.clone(), stream) else {
        return;
    };
    let mut opened = Opened::Ndjson(src);
    map_all(&mut opened, &info, &spec(NDJSON_MAPPING));
});
