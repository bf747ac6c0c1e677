-- The user's language for the console (a BCP 47 tag such as zh-CN); NULL: the browser's.
ALTER TABLE users ADD COLUMN language TEXT;
