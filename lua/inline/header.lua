-- Checks header_v, field "V" of the record hash (a string, or false when
-- absent: layout 1; see include/header.lua): a hash of another layout is
-- refused whole, before anything read from it is used.
if header_v and header_v ~= LAYOUT and sub(header_v, 1, #LAYOUT_HEAD) ~= LAYOUT_HEAD then
  fail("corrupt", "layout version")
end
