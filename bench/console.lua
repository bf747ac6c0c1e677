-- wrk script for the console benchmark: GET one page with the session cookie.
--   COOKIE=rapport_session=rps_… PAGE=/r/contact wrk -s bench/console.lua http://127.0.0.1:18186
local cookie = os.getenv("COOKIE") or ""
local page = os.getenv("PAGE") or "/"
request = function()
  return wrk.format("GET", page, { ["Cookie"] = cookie, ["Accept-Language"] = "en" })
end
