-- Where a node takes SRT publishers ("srt://host:port"; empty when its SRT listener is off).
ALTER TABLE nodes ADD COLUMN srt_url TEXT NOT NULL DEFAULT '';
