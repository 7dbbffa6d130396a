//! Mapping file text → spec::parse → compile against a fixed CSV header → map a few
//! fixed rows (with empty, odd and well-formed values) through whatever compiled.
#![no_main]

use std::io::Cursor;

use cdp_backfill::map::spec;
use cdp_backfill::source::csv::{CsvOptions, CsvSource};
use cdp_backfill::source::{Format, Opened, Stream};
use cdp_backfill_fuzz::{input, map_all};
use libfuzzer_sys::fuzz_target;

const ROWS: &[u8] = b"user_id,event,ts,amount,n,flag,meta,kind\n\
u1,Signed Up,2024-01-02T03:04:05Z,1.5,7,true,\"{\"\"a\"\":[1,2]}\",track\n\
,,,,,,,\n\
u3,E,1700000000,-0,99999999999999999999,no,[1,identify\n\
\xff\xfe,\"x\"\"y\",1e400,NaN,-1,TRUE,null,page\n\
u5,E,2024-13-45,1e-400,0x10,0,{},bogus,extra\n";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = spec::parse(text) else {
        return;
    };
    let info = input(Format::Csv);
    let stream: Stream = Box::new(Cursor::new(ROWS.to_vec()));
    let src = CsvSource::open(info.clone(), stream, CsvOptions::default())
        .expect("the fixed rows have a header");
    let mut opened = Opened::Csv(src);
    map_all(&mut opened, &info, &spec);
});
