-- Sets header_new to header_v (checked by inline/header.lua) with the
-- period `per` listed, for a script about to write per's totals where
-- there were none; nil when the header lists it already.
header_new = header_v or LAYOUT
if find(header_new .. " ", " " .. per .. " ", 1, true) then
  header_new = nil
else
  header_new = header_new .. " " .. per
end
