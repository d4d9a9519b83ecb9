-- Wireshark dissector for TCP-ENO (RFC 8547) and tcpcrypt (RFC 8548), shipped with tcpcrypt-py.
--
-- Install:  tcpstack wireshark-plugin --install
--           (copies this file into Wireshark's personal Lua plugins folder,
--            `tshark -G folders` -> "Personal Lua Plugins")
-- One-off:  tshark -X lua_script:tcpeno_tcpcrypt.lua -r capture.pcap -V
--
-- Two protocols:
--
--  tcpeno    TCP option kind 69, hooked into the "tcp.option" dissector table.  The
--            SYN-form option (RFC 8547 4.1 figure 2) is split into its suboptions: the
--            global suboption with its b and a bits (4.2 figure 5), TEP identifiers by
--            name (RFC 8548 section 7 table 4) with their v bit (figure 4), length bytes
--            (4.4 figures 6 and 7) and suboption data; a tcpcrypt TEP's data of 9 bytes or
--            more is a resumption suboption (RFC 8548 3.5 figures 2 and 3): the resume[i]
--            identifier half and the nonce.  The non-SYN form (figure 3) shows its data.
--            Host B's SYN (b = 1) gets the negotiated TEP (4.5: the last TEP of B's option
--            that A offered too).
--
--  tcpcrypt  The TCP byte stream once ENO has negotiated a tcpcrypt TEP: the conversation
--            is handed to this dissector from host B's SYN, so it is recognised on any
--            port.  Init1 and Init2 (RFC 8548 4.1: INIT1_MAGIC/INIT2_MAGIC, message_len,
--            nciphers and sym_cipher by name, N_A/N_B, Pub_A/Pub_B with the pubkey_len
--            prefix of the NIST curves, ignored), then encryption frames (4.2: control with
--            its cres and rekey bits, clen, ciphertext ending in the 16-byte AEAD tag).
--            Frames and Init messages that span TCP segments are reassembled and shown
--            whole.  A resumed session (3.5) has no Init messages.  A capture that starts
--            after the SYNs is picked up by a heuristic on the Init magic numbers.

local ENO_KIND = 69
local INIT1_MAGIC = 0x15101a0e
local INIT2_MAGIC = 0x097105e0
local N_LEN = 32             -- N_A_LEN = N_B_LEN (RFC 8548 section 5)
local TAG_LEN = 16           -- every AEAD of RFC 8548 table 3
local MAX_INIT_LEN = 65536   -- what tcpcrypt-py accepts; larger is shown as not an Init message
local RESUME_HALF_LEN = 9    -- resume[i]{0..8} or {9..17} (RFC 8548 3.5)

-- RFC 8547 section 11 table 3 and RFC 8548 section 7 table 4
local tep_names = {
    [0x20] = "Experimental Use",
    [0x21] = "TCPCRYPT_ECDHE_P256",
    [0x22] = "TCPCRYPT_ECDHE_P521",
    [0x23] = "TCPCRYPT_ECDHE_Curve25519",
    [0x24] = "TCPCRYPT_ECDHE_Curve448",
}
for i = 0x70, 0x7f do tep_names[i] = "Reserved for extended identifiers" end

-- bytes Pub_A / Pub_B occupy on the wire (RFC 8548 section 5), the length prefix included
local tep_pub_len = { [0x21] = 2 + 33, [0x22] = 2 + 67, [0x23] = 32, [0x24] = 56 }
local tep_nist = { [0x21] = true, [0x22] = true }

-- RFC 8548 section 7 table 5
local aead_names = {
    [0x0001] = "AEAD_AES_128_GCM",
    [0x0002] = "AEAD_AES_256_GCM",
    [0x0010] = "AEAD_CHACHA20_POLY1305",
}
local magic_names = { [INIT1_MAGIC] = "INIT1_MAGIC", [INIT2_MAGIC] = "INIT2_MAGIC" }

local function tep_name(t)
    return tep_names[t] or string.format("Unknown TEP 0x%02x", t)
end

---------------------------------------------------------------------------------------------
-- TCP-ENO: the option
---------------------------------------------------------------------------------------------

local p_eno = Proto("tcpeno", "TCP Encryption Negotiation Option (TCP-ENO, RFC 8547)")

local ef = {
    kind        = ProtoField.uint8("tcpeno.kind", "Kind", base.DEC, { [ENO_KIND] = "TCP-ENO" }),
    length      = ProtoField.uint8("tcpeno.length", "Length", base.DEC),
    form        = ProtoField.string("tcpeno.form", "Form"),
    suboption   = ProtoField.bytes("tcpeno.suboption", "Suboption"),
    global      = ProtoField.uint8("tcpeno.global", "Global suboption", base.HEX),
    global_z    = ProtoField.uint8("tcpeno.global.z", "z1 z2 z3 (zero bits)", base.HEX, nil, 0x1c),
    global_a    = ProtoField.bool("tcpeno.global.a", "a (application-aware)", 8, nil, 0x02),
    global_b    = ProtoField.bool("tcpeno.global.b", "b (passive role)", 8, nil, 0x01),
    tep_byte    = ProtoField.uint8("tcpeno.tep_byte", "TEP suboption byte", base.HEX),
    v           = ProtoField.bool("tcpeno.v", "v (suboption data follows)", 8, nil, 0x80),
    tep         = ProtoField.uint8("tcpeno.tep", "TEP identifier (glt)", base.HEX, tep_names, 0x7f),
    length_byte = ProtoField.uint8("tcpeno.length_byte", "Length byte", base.HEX),
    nnnnn       = ProtoField.uint8("tcpeno.length_byte.nnnnn", "nnnnn (data length - 1)", base.DEC, nil, 0x1f),
    data_len    = ProtoField.uint8("tcpeno.data_len", "Suboption data length", base.DEC),
    data        = ProtoField.bytes("tcpeno.data", "Suboption data"),
    resume_half = ProtoField.bytes("tcpeno.resume_id_half", "Resumption identifier half (resume[i]{0..8} or {9..17})"),
    resume_nonce = ProtoField.bytes("tcpeno.resume_nonce", "Resumption nonce (nonce_a or nonce_b)"),
    nonsyn_data = ProtoField.bytes("tcpeno.nonsyn_data", "Non-SYN-form data"),
    role        = ProtoField.string("tcpeno.role", "Role"),
    negotiated  = ProtoField.uint8("tcpeno.negotiated_tep", "Negotiated TEP", base.HEX, tep_names),
    resumption  = ProtoField.bool("tcpeno.resumption", "Session resumption"),
}
p_eno.fields = ef

local e_eno_len = ProtoExpert.new("tcpeno.ill_formed", "Ill-formed ENO option (RFC 8547 4.4): the option must be ignored",
                                  expert.group.MALFORMED, expert.severity.ERROR)
local e_eno_z = ProtoExpert.new("tcpeno.z_bits", "Reserved z bits set (RFC 8547 4.2: MUST be zero when sent)",
                                expert.group.PROTOCOL, expert.severity.WARN)
local e_eno_global2 = ProtoExpert.new("tcpeno.second_global", "Second global suboption, ignored (RFC 8547 4.2)",
                                      expert.group.PROTOCOL, expert.severity.NOTE)
local e_eno_nonce = ProtoExpert.new("tcpeno.resume_nonce_long", "Resumption nonce longer than 8 bytes (RFC 8548 3.5)",
                                    expert.group.PROTOCOL, expert.severity.WARN)
p_eno.experts = { e_eno_len, e_eno_z, e_eno_global2, e_eno_nonce }

local f_syn = Field.new("tcp.flags.syn")

-- Negotiation state, built on the first pass in frame order (pinfo.visited false) and only
-- read afterwards, so any later re-dissection order shows the same thing.  Keyed by the TCP
-- connection's address/port pair, not tcp.stream: fields are not available when Wireshark
-- dissects without a tree (tshark -2's first pass).
--   pending[key]      the offers of the last SYN-form option of host A (b = 0) on key
--   negotiated[key]   list of {at = frame, tep =, resumed =}, in frame order: a 4-tuple reused
--                     for a later connection gets a new entry
--   negotiated_at[n]  the entry frame n (host B's SYN) produced, for the tree
local pending, negotiated, negotiated_at = {}, {}, {}

function p_eno.init()
    pending, negotiated, negotiated_at = {}, {}, {}
end

local function conv_key(pinfo)
    local a = tostring(pinfo.src) .. "/" .. pinfo.src_port
    local b = tostring(pinfo.dst) .. "/" .. pinfo.dst_port
    if a < b then return a .. "|" .. b end
    return b .. "|" .. a
end

-- The negotiation in force for this packet's connection, or nil.
local function conv_state(pinfo)
    local list = negotiated[conv_key(pinfo)]
    if list == nil then return nil end
    for i = #list, 1, -1 do
        if list[i].at <= pinfo.number then return list[i] end
    end
    return nil
end

local p_tcpcrypt   -- defined below

-- One TEP suboption at [off, off+1+dlen): its byte, then data (resumption for tcpcrypt TEPs).
local function add_tep(tree, tvb, start, off, dlen, lbyte, offers)
    local b = tvb(off, 1):uint()
    local t = bit.band(b, 0x7f)
    local is_v = bit.band(b, 0x80) ~= 0
    local item = tree:add(ef.suboption, tvb(start, off + 1 + dlen - start))
    local label = string.format("TEP %s (0x%02x), v=%d", tep_name(t), t, is_v and 1 or 0)
    if lbyte then
        local li = item:add(ef.length_byte, tvb(start, 1))
        li:add(ef.nnnnn, tvb(start, 1))
        label = label .. string.format(", length byte: %d data bytes", dlen)
    end
    local ti = item:add(ef.tep_byte, tvb(off, 1))
    ti:add(ef.v, tvb(off, 1))
    ti:add(ef.tep, tvb(off, 1))
    if is_v then
        item:add(ef.data_len, dlen):set_generated()
    end
    if dlen > 0 then
        local d = tvb(off + 1, dlen)
        local di = item:add(ef.data, d)
        if tep_pub_len[t] and dlen >= RESUME_HALF_LEN then
            label = label .. ": resumption suboption"
            di:add(ef.resume_half, tvb(off + 1, RESUME_HALF_LEN))
            if dlen > RESUME_HALF_LEN then
                di:add(ef.resume_nonce, tvb(off + 1 + RESUME_HALF_LEN, dlen - RESUME_HALF_LEN))
            end
            if dlen > RESUME_HALF_LEN + 8 then
                di:add_proto_expert_info(e_eno_nonce)
            end
        elseif tep_pub_len[t] then
            label = label .. ": under 9 data bytes, an offer of fresh key exchange (RFC 8548 3.5)"
        end
    end
    item:set_text(label)
    offers[#offers + 1] = { tep = t, dlen = dlen }
    return t
end

function p_eno.dissector(tvb, pinfo, tree)
    local olen = tvb:len()
    local root = tree:add(p_eno, tvb())
    root:add(ef.kind, tvb(0, 1))
    root:add(ef.length, tvb(1, 1))
    local syn = f_syn()
    local is_syn
    if syn ~= nil then
        is_syn = syn.value
    else
        -- No tree, no fields (tshark -2's first pass).  Decide by content: tcpcrypt defines
        -- no non-SYN-form data, so a non-SYN-form option is 2 bytes, and an empty
        -- SYN-form option offers nothing (negotiation fails either way).
        is_syn = olen > 2
    end
    if not is_syn then
        root:add(ef.form, "non-SYN form (RFC 8547 figure 3)"):set_generated()
        if olen > 2 then
            root:add(ef.nonsyn_data, tvb(2, olen - 2))
        end
        root:append_text(string.format(": non-SYN form, %d data bytes", olen - 2))
        return olen
    end
    root:add(ef.form, "SYN form (RFC 8547 figure 2)"):set_generated()

    local global, offers, summary = nil, {}, {}
    local off, ok = 2, true
    while off < olen do
        local c = tvb(off, 1):uint()
        if c < 0x20 then                                    -- global suboption (4.2)
            local gi = root:add(ef.global, tvb(off, 1))
            gi:add(ef.global_z, tvb(off, 1))
            gi:add(ef.global_a, tvb(off, 1))
            gi:add(ef.global_b, tvb(off, 1))
            gi:set_text(string.format("Global suboption: 0x%02x (b=%d, a=%d)", c, bit.band(c, 1),
                                      bit.rshift(bit.band(c, 2), 1)))
            if bit.band(c, 0x1c) ~= 0 then gi:add_proto_expert_info(e_eno_z) end
            if global == nil then
                global = c
            else
                gi:add_proto_expert_info(e_eno_global2)
            end
            summary[#summary + 1] = string.format("b=%d", bit.band(c, 1))
            off = off + 1
        elseif c < 0x80 then                                -- TEP, v = 0, no data
            local t = add_tep(root, tvb, off, off, 0, false, offers)
            summary[#summary + 1] = tep_name(t)
            off = off + 1
        elseif c < 0xa0 then                                -- length byte (4.4)
            local dlen = bit.band(c, 0x1f) + 1
            if off + 1 >= olen or tvb(off + 1, 1):uint() < 0xa0 or off + 2 + dlen > olen then
                local bad = root:add(ef.length_byte, tvb(off, 1))
                bad:add(ef.nnnnn, tvb(off, 1))
                bad:add_proto_expert_info(e_eno_len)
                ok = false
                break
            end
            local t = add_tep(root, tvb, off, off + 1, dlen, true, offers)
            summary[#summary + 1] = tep_name(t) .. "+data"
            off = off + 2 + dlen
        else                                                -- TEP, v = 1: data to the end
            local t = add_tep(root, tvb, off, off, olen - off - 1, false, offers)
            summary[#summary + 1] = tep_name(t) .. (olen - off - 1 > 0 and "+data" or "")
            off = olen
        end
    end

    local b = global and bit.band(global, 1) or 0
    local role = (b == 1) and "B" or "A"
    root:add(ef.role, string.format("%s (b=%d%s, RFC 8547 4.3)", role, b,
                                    global and "" or ", implicit global suboption 0x00")):set_generated()
    root:append_text(string.format(": SYN form, host %s: %s", role, table.concat(summary, ", ")))

    if ok and not pinfo.visited then
        local key = conv_key(pinfo)
        if role == "A" then
            pending[key] = offers
        elseif pending[key] then
            -- 4.5: the negotiated TEP is the last TEP in B's option that A sent too.
            local a = pending[key]
            local neg, mine = nil, nil
            for i = #offers, 1, -1 do
                for _, o in ipairs(a) do
                    if o.tep == offers[i].tep then neg, mine = offers[i], o; break end
                end
                if neg then break end
            end
            pending[key] = nil
            if neg then
                local rec = {
                    at = pinfo.number, tep = neg.tep,
                    -- 3.5: both resumption suboptions carry an identifier half (9+ bytes)
                    resumed = tep_pub_len[neg.tep] ~= nil and neg.dlen >= RESUME_HALF_LEN
                              and mine.dlen >= RESUME_HALF_LEN,
                }
                local list = negotiated[key] or {}
                list[#list + 1] = rec
                negotiated[key] = list
                negotiated_at[pinfo.number] = rec
                if tep_pub_len[neg.tep] then
                    pinfo.conversation = p_tcpcrypt
                end
            end
        end
    end
    local rec = negotiated_at[pinfo.number]
    if rec then
        local ni = root:add(ef.negotiated, rec.tep)
        ni:set_generated()
        ni:append_text(" (RFC 8547 4.5)")
        root:add(ef.resumption, rec.resumed):set_generated()
        root:append_text(string.format("; negotiated %s%s", tep_name(rec.tep), rec.resumed and " (resumed)" or ""))
    end
    return olen
end

DissectorTable.get("tcp.option"):add(ENO_KIND, p_eno)

---------------------------------------------------------------------------------------------
-- tcpcrypt: the byte stream
---------------------------------------------------------------------------------------------

p_tcpcrypt = Proto("tcpcrypt", "tcpcrypt (RFC 8548)")

local cf = {
    init1       = ProtoField.bytes("tcpcrypt.init1", "Init1"),
    init2       = ProtoField.bytes("tcpcrypt.init2", "Init2"),
    magic       = ProtoField.uint32("tcpcrypt.magic", "Magic", base.HEX, magic_names),
    message_len = ProtoField.uint32("tcpcrypt.message_len", "message_len", base.DEC),
    nciphers    = ProtoField.uint8("tcpcrypt.nciphers", "nciphers", base.DEC),
    sym_cipher  = ProtoField.uint16("tcpcrypt.sym_cipher", "sym_cipher", base.HEX, aead_names),
    n_a         = ProtoField.bytes("tcpcrypt.n_a", "N_A"),
    n_b         = ProtoField.bytes("tcpcrypt.n_b", "N_B"),
    pub_a       = ProtoField.bytes("tcpcrypt.pub_a", "Pub_A"),
    pub_b       = ProtoField.bytes("tcpcrypt.pub_b", "Pub_B"),
    pubkey_len  = ProtoField.uint16("tcpcrypt.pubkey_len", "pubkey_len", base.DEC),
    pubkey      = ProtoField.bytes("tcpcrypt.pubkey", "pubkey (compressed point)"),
    ignored     = ProtoField.bytes("tcpcrypt.ignored", "ignored"),
    frame       = ProtoField.bytes("tcpcrypt.frame", "Encryption frame"),
    control     = ProtoField.uint8("tcpcrypt.control", "control", base.HEX),
    cres        = ProtoField.uint8("tcpcrypt.control.cres", "cres (reserved)", base.HEX, nil, 0xfe),
    rekey       = ProtoField.bool("tcpcrypt.control.rekey", "rekey", 8, nil, 0x01),
    clen        = ProtoField.uint16("tcpcrypt.clen", "clen", base.DEC),
    ciphertext  = ProtoField.bytes("tcpcrypt.ciphertext", "ciphertext"),
    encrypted   = ProtoField.bytes("tcpcrypt.encrypted_plaintext", "Encrypted plaintext (flags, [urgent,] data)"),
    tag         = ProtoField.bytes("tcpcrypt.tag", "AEAD tag"),
    tep         = ProtoField.uint8("tcpcrypt.tep", "TEP (from TCP-ENO)", base.HEX, tep_names),
    resumed     = ProtoField.bool("tcpcrypt.resumed", "Resumed session (RFC 8548 3.5)"),
}
p_tcpcrypt.fields = cf

local e_short = ProtoExpert.new("tcpcrypt.init_short", "Init message shorter than its fixed fields",
                                expert.group.MALFORMED, expert.severity.ERROR)
local e_cres = ProtoExpert.new("tcpcrypt.cres", "Reserved cres bits set (RFC 8548 4.2: MUST be zero when sent)",
                               expert.group.PROTOCOL, expert.severity.WARN)
local e_clen = ProtoExpert.new("tcpcrypt.clen_short", "clen shorter than the AEAD tag",
                               expert.group.MALFORMED, expert.severity.ERROR)
local e_ignored = ProtoExpert.new("tcpcrypt.ignored_nonempty",
                                  "Bytes after Pub (RFC 8548 4.1: MUST be empty when sent, ignored when received)",
                                  expert.group.PROTOCOL, expert.severity.NOTE)
p_tcpcrypt.experts = { e_short, e_cres, e_clen, e_ignored }

local function init_magic(tvb, off)
    if tvb:len() - off < 4 then return nil end
    local m = tvb(off, 4):uint()
    if m == INIT1_MAGIC or m == INIT2_MAGIC then return m end
    return nil
end

-- Length of the PDU at off: nil when more bytes are needed to know it.
local function pdu_len(tvb, off, st)
    local avail = tvb:len() - off
    if not (st and st.resumed) then
        local first = tvb(off, 1):uint()
        if first == 0x15 or first == 0x09 then
            if avail < 4 then return nil end
            if init_magic(tvb, off) then
                if avail < 8 then return nil end
                local mlen = tvb(off + 4, 4):uint()
                if mlen >= 8 and mlen <= MAX_INIT_LEN then return mlen end
            end
        end
    end
    if avail < 3 then return nil end
    return 3 + tvb(off + 1, 2):uint()
end

-- Pub_A / Pub_B at [off, off+len), the TEP's encoding (RFC 8548 section 5).
local function add_pub(tree, field, tvb, off, len, tep)
    local item = tree:add(field, tvb(off, len))
    if tep_nist[tep] and len >= 2 then
        item:add(cf.pubkey_len, tvb(off, 2))
        if len > 2 then item:add(cf.pubkey, tvb(off + 2, len - 2)) end
    end
    return item
end

-- The TEP a stream negotiated, or a guess from the length of what follows the nonce.
local function pub_wire_len(tvb, off, rest, st)
    if st and st.tep and tep_pub_len[st.tep] then
        return st.tep, tep_pub_len[st.tep]
    end
    if rest >= 2 then
        local l = tvb(off, 2):uint()
        if l == 33 and rest >= 35 then return 0x21, 35 end
        if l == 67 and rest >= 69 then return 0x22, 69 end
    end
    if rest == 32 then return 0x23, 32 end
    if rest == 56 then return 0x24, 56 end
    return nil, rest
end

local function dissect_init(tvb, pinfo, tree, st)
    local magic = tvb(0, 4):uint()
    local mlen = tvb:len()
    local is1 = magic == INIT1_MAGIC
    local item = tree:add(is1 and cf.init1 or cf.init2, tvb())
    item:add(cf.magic, tvb(0, 4))
    item:add(cf.message_len, tvb(4, 4))
    local off = 8
    local info
    if is1 then
        if mlen < off + 1 then item:add_proto_expert_info(e_short); return "Init1 (short)" end
        local k = tvb(off, 1):uint()
        item:add(cf.nciphers, tvb(off, 1))
        off = off + 1
        local names = {}
        for i = 1, k do
            if off + 2 > mlen then item:add_proto_expert_info(e_short); return "Init1 (short)" end
            local c = tvb(off, 2):uint()
            item:add(cf.sym_cipher, tvb(off, 2))
            names[#names + 1] = aead_names[c] or string.format("0x%04x", c)
            off = off + 2
        end
        info = "Init1 sym_cipher_list=" .. table.concat(names, ",")
    else
        if mlen < off + 2 then item:add_proto_expert_info(e_short); return "Init2 (short)" end
        local c = tvb(off, 2):uint()
        item:add(cf.sym_cipher, tvb(off, 2))
        info = "Init2 sym_cipher=" .. (aead_names[c] or string.format("0x%04x", c))
        off = off + 2
    end
    if off + N_LEN > mlen then item:add_proto_expert_info(e_short); return info .. " (short)" end
    item:add(is1 and cf.n_a or cf.n_b, tvb(off, N_LEN))
    off = off + N_LEN
    local rest = mlen - off
    local tep, plen = pub_wire_len(tvb, off, rest, st)
    if plen > rest then item:add_proto_expert_info(e_short); return info .. " (short)" end
    if plen > 0 then
        local pi = add_pub(item, is1 and cf.pub_a or cf.pub_b, tvb, off, plen, tep)
        if tep then pi:append_text(" (" .. tep_name(tep) .. ")") end
    end
    off = off + plen
    if off < mlen then
        item:add(cf.ignored, tvb(off, mlen - off)):add_proto_expert_info(e_ignored)
    end
    item:set_text(string.format("%s, message_len %d", is1 and "Init1" or "Init2", mlen))
    return info
end

local function dissect_frame(tvb, pinfo, tree)
    local clen = tvb(1, 2):uint()
    local item = tree:add(cf.frame, tvb())
    local ci = item:add(cf.control, tvb(0, 1))
    ci:add(cf.cres, tvb(0, 1))
    ci:add(cf.rekey, tvb(0, 1))
    local control = tvb(0, 1):uint()
    if bit.band(control, 0xfe) ~= 0 then ci:add_proto_expert_info(e_cres) end
    item:add(cf.clen, tvb(1, 2))
    local rekey = bit.band(control, 1) == 1
    if clen > 0 then
        local ct = item:add(cf.ciphertext, tvb(3, clen))
        if clen >= TAG_LEN then
            if clen > TAG_LEN then ct:add(cf.encrypted, tvb(3, clen - TAG_LEN)) end
            ct:add(cf.tag, tvb(3 + clen - TAG_LEN, TAG_LEN))
        end
    end
    if clen < TAG_LEN then item:add_proto_expert_info(e_clen) end
    item:set_text(string.format("Encryption frame, clen %d%s", clen, rekey and ", rekey" or ""))
    return string.format("Frame clen=%d%s", clen, rekey and " [rekey]" or "")
end

function p_tcpcrypt.dissector(tvb, pinfo, tree)
    local len = tvb:len()
    if len == 0 then return 0 end
    local st = conv_state(pinfo)
    pinfo.cols.protocol:set("tcpcrypt")
    local root = tree:add(p_tcpcrypt, tvb())
    if st and st.tep then
        root:add(cf.tep, st.tep):set_generated()
        root:add(cf.resumed, st.resumed and true or false):set_generated()
    end
    local infos, off = {}, 0
    while off < len do
        local need = pdu_len(tvb, off, st)
        if need == nil or off + need > len then
            if pinfo.can_desegment > 0 then
                pinfo.desegment_offset = off
                pinfo.desegment_len = need and (off + need - len) or DESEGMENT_ONE_MORE_SEGMENT
                break
            end
            -- no reassembly: show what there is
            root:add(cf.ciphertext, tvb(off, len - off)):set_text(
                string.format("Continuation or partial PDU (%d bytes)", len - off))
            infos[#infos + 1] = "partial"
            off = len
            break
        end
        local sub = tvb(off, need):tvb()
        if init_magic(sub, 0) and not (st and st.resumed) and need >= 8 then
            infos[#infos + 1] = dissect_init(sub, pinfo, root, st)
        else
            infos[#infos + 1] = dissect_frame(sub, pinfo, root)
        end
        off = off + need
    end
    if #infos > 0 then
        pinfo.cols.info:set(table.concat(infos, ", "))
        root:append_text(": " .. table.concat(infos, ", "))
    else
        root:append_text(": [waiting for the rest of the PDU]")
    end
    return len
end

-- A capture that starts after the SYNs: recognise the stream by the Init magic numbers.
local function heuristic(tvb, pinfo, tree)
    if tvb:len() < 8 or not init_magic(tvb, 0) then return false end
    local mlen = tvb(4, 4):uint()
    if mlen < 8 + 2 + N_LEN + 32 or mlen > MAX_INIT_LEN then return false end
    pinfo.conversation = p_tcpcrypt
    p_tcpcrypt.dissector(tvb, pinfo, tree)
    return true
end
p_tcpcrypt:register_heuristic("tcp", heuristic)
-- ... and by hand: Analyze > Decode As (tshark -d tcp.port==PORT,tcpcrypt).
DissectorTable.get("tcp.port"):add_for_decode_as(p_tcpcrypt)
