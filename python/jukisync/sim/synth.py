"""Synthetic residents and change streams: realistic, seeded, reproducible.

Used by `jukisync gen`, the demo, tests and benchmarks, so that every tier can be fed
data that looks like a municipality's (domain.md) without any real personal data.

- `generate_population` makes residents of real municipalities (Yamaguchi's 19,
  weighted by population, plus some in Tokyo, Hiroshima and Fukuoka) with common
  Japanese names and their katakana readings, an age pyramid like Japan's, street
  addresses, unique 住民票コード and valid unique 個人番号; about 2 % are foreign
  residents (alphabet or kanji names; some with a 通称), some Japanese have a 旧氏.
- `initial_load` is the population as creation updates, to seed a store.
- `generate_changes` is a stream of `(origin, Update)` whose mix of 異動事由 follows
  the national yearly figures (`ChangeMix`), with the moving season in March-April.
  It keeps the state of every resident, so the stream is internally consistent: a
  move between municipalities is a 転出 from the old one then, days later, a 転入 at
  the new one; removed residents never change again; codes are never reused.

Everything is a pure function of the seed (and of the arguments): same seed, same
stream. `random.Random` is used only through `random()`, `randrange()` and
`expovariate()`, whose outputs CPython keeps stable for a given seed.

The 住民票コード check digit is *not* the official one (its formula, 平成14年総務省
告示第436号, is unpublished): it is `placeholder_juminhyo_check_digit` unless the
caller passes another `CheckDigit`.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import heapq
import itertools
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from jukisync.wire.codes import kojin_bango_check_digit, local_government_check_digit
from jukisync.wire.messages import ChangeReason, Sex, Update

__all__ = [
    "DEFAULT_AS_OF",
    "DEFAULT_MIX",
    "MOVING_SEASON",
    "MUNICIPALITIES",
    "PREFECTURES",
    "ChangeMix",
    "CheckDigit",
    "Municipality",
    "Population",
    "Resident",
    "generate_changes",
    "generate_population",
    "initial_load",
    "placeholder_juminhyo_check",
    "placeholder_juminhyo_check_digit",
]

CheckDigit = Callable[[str], int]
"""Check digit of a 住民票コード from its first 10 digits."""

DEFAULT_AS_OF: Final = dt.date(2024, 1, 1)  # the date of domain.md's resident count

_JST: Final = dt.timezone(dt.timedelta(hours=9))
_US_PER_DAY: Final = 86_400_000_000
_IDEOGRAPHIC_SPACE: Final = "\u3000"  # between surname and given name (and readings)
_NATIONAL_RESIDENTS: Final = 124_885_175  # domain.md, 2024-01-01


# --- 住民票コード placeholder check digit ------------------------------------------------


def placeholder_juminhyo_check_digit(first10: str) -> int:
    """A stand-in check digit for 住民票コード: NOT the official formula.

    The official one is not public, so this is a plain mod-10 with weights 3,1,3,...
    from the right (as in EAN): it catches every single-digit error and most adjacent
    swaps, which is all synthetic data needs. Pass the real one as a `CheckDigit`
    where it is known.
    """
    if len(first10) != 10 or not (first10.isascii() and first10.isdigit()):
        raise ValueError(f"expected the first 10 ASCII digits of a 住民票コード: {first10!r}")
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(first10)))
    return (10 - total % 10) % 10


def placeholder_juminhyo_check(code: str) -> bool:
    """The placeholder as a whole-code predicate (`jukisync.codes.JuminhyoCheck`)."""
    return (
        len(code) == 11
        and code.isascii()
        and code.isdigit()
        and placeholder_juminhyo_check_digit(code[:10]) == int(code[10])
    )


# --- reference data: municipalities ----------------------------------------------------

PREFECTURES: Final = {"13": "東京都", "34": "広島県", "35": "山口県", "40": "福岡県"}


@dataclass(frozen=True, slots=True)
class Town:
    """A 町名 (or 大字) and how its addresses are written.

    `chome` > 0: 住居表示 with 丁目 ("中央二丁目3番4号"); 0: 住居表示 without 丁目
    ("唐戸町3番4号"); -1: 地番 style of rural areas ("大字奈古1234番地").
    """

    name: str
    chome: int


@dataclass(frozen=True, slots=True)
class Municipality:
    code: str  # 6-digit local government code (JIS X 0402, with check digit)
    name: str  # as written in addresses after the prefecture: 下関市, 広島市中区
    population: int  # approximate, 2020 census
    towns: tuple[Town, ...]
    weight: float  # share of the synthetic population (relative)

    @property
    def prefecture(self) -> str:
        return self.code[:2]

    @property
    def prefix(self) -> str:
        """The address up to the town: 山口県下関市."""
        return PREFECTURES[self.prefecture] + self.name


# Municipalities outside Yamaguchi get a tenth of their real weight: the project's
# seed is Yamaguchi's, so most records should be there, while enough live elsewhere
# for moves between prefectures (山口 <-> 東京, 広島, 福岡) to be common.
_OUTSIDE_WEIGHT: Final = 0.1

# code, name, population, towns ("町名:丁目数", -1 = 地番 style). Designated cities'
# wards (広島市中区, 福岡市博多区...) are listed rather than the cities, because for the
# resident register a ward counts as a municipality (住民基本台帳法 第38条).
_MUNICIPALITY_DATA: Final = """
352012 下関市 255051 竹崎町:4 細江町:3 豊前田町:3 彦島江の浦町:9 綾羅木本町:8 幡生町:2
    唐戸町:0 長府中浜町:0 大字吉見下:-1 菊川町大字下岡枝:-1
352021 宇部市 162570 常盤町:2 新天町:2 琴芝町:2 松島町:0 恩田町:5 大字西岐波:-1
    大字東岐波:-1 大字小串:-1
352039 山口市 193966 中央:5 大手町:0 亀山町:0 湯田温泉:6 小郡黄金町:0 吉敷下東:4
    小郡下郷:-1 大内御堀:-1 平井:-1 阿知須:-1
352047 萩市 44626 大字江向:-1 大字椿東:-1 大字土原:-1 大字堀内:-1 大字平安古町:-1
    大字東浜崎町:-1
352063 防府市 113979 寿町:0 天神:2 松崎町:0 駅南町:0 岸津:2 新田:-1 大字牟礼:-1
352071 下松市 57315 大手町:3 瑞穂町:3 東豊井:-1 西豊井:-1 大字末武上:-1 大字生野屋:-1
352080 岩国市 129125 今津町:6 麻里布町:7 室の木町:5 錦見:9 岩国:4 由宇町:-1 玖珂町:-1
    周東町下久原:-1
352101 光市 49798 中央:6 島田:4 虹ケ浜:3 浅江:7 光井:9 室積:-1
352110 長門市 32519 東深川:-1 仙崎:-1 油谷新別名:-1 日置上:-1 三隅中:-1
352128 柳井市 30799 南町:6 中央:2 柳井:-1 古開作:-1 伊保庄:-1 新庄:-1
352136 美祢市 23247 大嶺町東分:-1 美東町大田:-1 秋芳町秋吉:-1 伊佐町伊佐:-1 於福町上:-1
352152 周南市 137540 岐山通:4 新宿通:6 岐南町:0 福川:4 徳山:-1 久米:-1 富田:-1 大字呼坂:-1
352161 山陽小野田市 60326 日の出:5 中央:3 大字小野田:-1 大字厚狭:-1 大字埴生:-1 大字高泊:-1
353051 周防大島町 14798 大字小松:-1 大字久賀:-1 大字西安下庄:-1 大字油宇:-1
353213 和木町 6071 和木:6 関ケ浜:2 瀬田:-1
353418 上関町 2428 大字長島:-1 大字室津:-1 大字祝島:-1
353434 田布施町 14389 大字下田布施:-1 大字波野:-1 大字麻郷:-1 大字宿井:-1
353442 平生町 11601 大字平生町:-1 大字佐賀:-1 大字曽根:-1 大字宇佐木:-1
355020 阿武町 3055 大字奈古:-1 大字福賀:-1 大字宇田:-1
131016 千代田区 66680 丸の内:3 霞が関:3 永田町:2 神田神保町:3 九段南:4 麹町:6 大手町:2 有楽町:2
131032 港区 260486 芝:5 芝浦:4 六本木:7 赤坂:9 高輪:4 白金:6 南青山:7
131041 新宿区 349385 西新宿:8 新宿:7 高田馬場:4 四谷:4 大久保:3 百人町:4 神楽坂:6
131121 世田谷区 943664 三軒茶屋:2 太子堂:5 経堂:5 成城:9 北沢:5 用賀:4 桜新町:2 等々力:8
132012 八王子市 579355 旭町:0 明神町:4 子安町:4 南大沢:5 めじろ台:4 元本郷町:4
341011 広島市中区 136000 基町:0 紙屋町:2 八丁堀:0 大手町:5 国泰寺町:2 白島北町:0 舟入町:0
342025 呉市 214592 中央:6 本通:9 広古新開:9 阿賀中央:9 宝町:0
342076 福山市 460930 東桜町:0 霞町:4 南蔵王町:6 引野町:5 松永町:6 御幸町大字森脇:-1
342122 東広島市 196608 西条栄町:0 西条町下見:7 西条中央:8 八本松東:7 高屋町中島:-1
401064 北九州市小倉北区 180000 魚町:4 京町:4 浅野:3 馬借:3 紺屋町:0 大手町:0
401323 福岡市博多区 238000 博多駅前:4 博多駅東:3 中洲:5 住吉:5 吉塚:8 祇園町:0
401331 福岡市中央区 205000 天神:4 大名:2 赤坂:3 薬院:4 警固:3 六本松:4
402036 久留米市 303316 城南町:0 東町:0 六ツ門町:0 合川町:0 野中町:0 津福本町:-1
"""


def _parse_municipalities(data: str) -> tuple[Municipality, ...]:
    # Entries may wrap over lines: after the code, name and population every token of
    # an entry is a town ("name:chome"), so a token without ":" starts the next entry.
    entries: list[list[str]] = []
    for token in data.split():
        if ":" not in token and (not entries or len(entries[-1]) >= 3):
            entries.append([])
        entries[-1].append(token)
    result = []
    for code, name, population, *towns in entries:
        parsed = tuple(Town(t, int(c)) for t, c in (town.split(":") for town in towns))
        weight = int(population) * (1.0 if code.startswith("35") else _OUTSIDE_WEIGHT)
        result.append(Municipality(code, name, int(population), parsed, weight))
    return tuple(result)


MUNICIPALITIES: Final = _parse_municipalities(_MUNICIPALITY_DATA)


# --- reference data: names ---------------------------------------------------------------

# "漢字 ヨミ" pairs; "ヨミ1/ヨミ2" where the name has two common readings (中島 ナカジマ
# or ナカシマ): records take the first, and a 誤記修正 may switch to the other, the kind
# of 振り仮名 correction the 2025 reform made routine. Surnames in rough order of
# frequency nationally, with some common in Yamaguchi (弘中, 末永, 国広...).
_SURNAME_DATA: Final = """
佐藤 サトウ 鈴木 スズキ 高橋 タカハシ 田中 タナカ 伊藤 イトウ 渡辺 ワタナベ 山本 ヤマモト
中村 ナカムラ 小林 コバヤシ 加藤 カトウ 吉田 ヨシダ 山田 ヤマダ 佐々木 ササキ 山口 ヤマグチ
松本 マツモト 井上 イノウエ 木村 キムラ 林 ハヤシ 斎藤 サイトウ 清水 シミズ
山崎 ヤマザキ/ヤマサキ 森 モリ 池田 イケダ 橋本 ハシモト 阿部 アベ 石川 イシカワ 山下 ヤマシタ
中島 ナカジマ/ナカシマ 石井 イシイ 小川 オガワ 前田 マエダ 岡田 オカダ 長谷川 ハセガワ
藤田 フジタ 後藤 ゴトウ 近藤 コンドウ 村上 ムラカミ 遠藤 エンドウ 青木 アオキ 坂本 サカモト
斉藤 サイトウ 福田 フクダ 太田 オオタ 西村 ニシムラ 藤井 フジイ 金子 カネコ 岡本 オカモト
藤原 フジワラ/フジハラ 中野 ナカノ 三浦 ミウラ 原田 ハラダ 中川 ナカガワ 松田 マツダ
竹内 タケウチ 小野 オノ 田村 タムラ 中山 ナカヤマ 和田 ワダ 石田 イシダ 森田 モリタ
上田 ウエダ 原 ハラ 内田 ウチダ 柴田 シバタ 酒井 サカイ 宮崎 ミヤザキ/ミヤサキ 横山 ヨコヤマ
高木 タカギ 安藤 アンドウ 宮本 ミヤモト 大野 オオノ 小島 コジマ/オジマ 谷口 タニグチ 今井 イマイ
工藤 クドウ 高田 タカダ/タカタ 増田 マスダ 丸山 マルヤマ 杉山 スギヤマ 村田 ムラタ
大塚 オオツカ 小山 コヤマ/オヤマ 藤本 フジモト 平野 ヒラノ 新井 アライ 河野 コウノ/カワノ
上野 ウエノ 武田 タケダ 野口 ノグチ 松井 マツイ 千葉 チバ 岩崎 イワサキ 菅原 スガワラ
木下 キノシタ 久保 クボ 佐野 サノ 野村 ノムラ 松尾 マツオ 市川 イチカワ 菊地 キクチ
杉本 スギモト 古川 フルカワ 大西 オオニシ 島田 シマダ 水野 ミズノ 桜井 サクライ 高野 タカノ
渡部 ワタナベ/ワタベ 吉川 ヨシカワ 山内 ヤマウチ 西田 ニシダ 飯田 イイダ 菊池 キクチ
西川 ニシカワ 小松 コマツ 北村 キタムラ 安田 ヤスダ 五十嵐 イガラシ 川口 カワグチ 平田 ヒラタ
関 セキ 中田 ナカタ/ナカダ 久保田 クボタ 服部 ハットリ 東 ヒガシ/アズマ 岩田 イワタ
土屋 ツチヤ 川崎 カワサキ 福島 フクシマ 本田 ホンダ 辻 ツジ 樋口 ヒグチ 秋山 アキヤマ
田口 タグチ 永井 ナガイ 山中 ヤマナカ 中西 ナカニシ 吉村 ヨシムラ 川上 カワカミ 石原 イシハラ
大橋 オオハシ 松岡 マツオカ 馬場 ババ 浅野 アサノ 荒木 アラキ 大久保 オオクボ 野田 ノダ
小池 コイケ 松下 マツシタ 熊谷 クマガイ 菅野 カンノ/スガノ 大谷 オオタニ 田代 タシロ
内藤 ナイトウ 星野 ホシノ 黒田 クロダ 尾崎 オザキ 永田 ナガタ 松浦 マツウラ 望月 モチヅキ
堀 ホリ 村井 ムライ 岡崎 オカザキ 川村 カワムラ 榎本 エノモト 藤川 フジカワ 西山 ニシヤマ
古賀 コガ 河村 カワムラ 岡村 オカムラ 有田 アリタ 藤山 フジヤマ 三好 ミヨシ 吉岡 ヨシオカ
宮田 ミヤタ 小田 オダ 杉原 スギハラ 林田 ハヤシダ 松村 マツムラ 竹下 タケシタ 堀田 ホッタ
西岡 ニシオカ 中尾 ナカオ 浜田 ハマダ 岡 オカ 石橋 イシバシ 上原 ウエハラ 藤村 フジムラ
今村 イマムラ 片山 カタヤマ 福井 フクイ 吉永 ヨシナガ 植田 ウエダ 森本 モリモト 森下 モリシタ
桑原 クワバラ 秋本 アキモト 梅田 ウメダ 西本 ニシモト 白石 シロイシ 矢野 ヤノ 田島 タジマ
田辺 タナベ 坂口 サカグチ 村松 ムラマツ 大島 オオシマ 河合 カワイ 須藤 スドウ 吉野 ヨシノ
小西 コニシ 藤岡 フジオカ 大石 オオイシ 平井 ヒライ 中井 ナカイ 岩本 イワモト 金田 カネダ
安部 アベ 弘中 ヒロナカ 末永 スエナガ 国広 クニヒロ 重富 シゲトミ 山根 ヤマネ 河内 カワウチ
"""

# Given names by sex and by the birth cohort they were common in (before 1960,
# 1960-1989, from 1990): an 85-year-old is a 清 or a 和子, a 10-year-old a 蓮 or a 陽菜.
_MALE_GIVEN_DATA: Final = (
    """
清 キヨシ 茂 シゲル 勇 イサム 博 ヒロシ 進 ススム 実 ミノル 正 タダシ 弘 ヒロシ 明 アキラ
武 タケシ 勝 マサル 隆 タカシ 修 オサム 稔 ミノル 豊 ユタカ 和夫 カズオ 正夫 マサオ
三郎 サブロウ 一郎 イチロウ 健一 ケンイチ 昭 アキラ 秀夫 ヒデオ 幸雄 ユキオ 義雄 ヨシオ
誠 マコト 浩 ヒロシ 邦夫 クニオ 敏夫 トシオ 孝 タカシ 保 タモツ
""",
    """
誠 マコト 大輔 ダイスケ 直樹 ナオキ 健太 ケンタ 拓也 タクヤ 哲也 テツヤ 達也 タツヤ
和也 カズヤ 剛 ツヨシ 浩二 コウジ 健二 ケンジ 学 マナブ 聡 サトシ 亮 リョウ 隆之 タカユキ
秀樹 ヒデキ 淳 ジュン 大介 ダイスケ 雅之 マサユキ 慎一 シンイチ 洋平 ヨウヘイ
健太郎 ケンタロウ 智也 トモヤ 和彦 カズヒコ 信也 シンヤ 浩之 ヒロユキ 正樹 マサキ
康弘 ヤスヒロ 英樹 ヒデキ 裕太 ユウタ
""",
    """
翔太 ショウタ 蓮 レン 大翔 ヒロト/ハルト 陽翔 ハルト 悠真 ユウマ 湊 ミナト 樹 イツキ
颯太 ソウタ 大和 ヤマト 拓海 タクミ 翔 ショウ 陸 リク 悠斗 ユウト 陽太 ヒナタ/ヨウタ
蒼 アオイ/ソウ 律 リツ 朝陽 アサヒ 颯 ハヤテ 海斗 カイト 大輝 ダイキ 優斗 ユウト
瑛太 エイタ 結翔 ユイト 奏太 ソウタ 壮真 ソウマ 碧 アオ 凪 ナギ 柊 シュウ 悠人 ユウト
""",
)
_FEMALE_GIVEN_DATA: Final = (
    """
和子 カズコ 幸子 サチコ 節子 セツコ 洋子 ヨウコ 恵子 ケイコ 京子 キョウコ 久美子 クミコ
美智子 ミチコ 文子 フミコ 弘子 ヒロコ 清子 キヨコ 照子 テルコ 千代子 チヨコ 静子 シズコ
悦子 エツコ 信子 ノブコ 八重子 ヤエコ 君子 キミコ 正子 マサコ 光子 ミツコ 敏子 トシコ
良子 ヨシコ 喜美子 キミコ 登美子 トミコ 澄子 スミコ 春子 ハルコ
""",
    """
裕子 ユウコ 真由美 マユミ 智子 トモコ 明美 アケミ 直美 ナオミ 由美子 ユミコ 陽子 ヨウコ
恵美 エミ 美穂 ミホ 香織 カオリ 愛 アイ 恵 メグミ 麻衣 マイ 彩 アヤ 舞 マイ 沙織 サオリ
友美 トモミ 典子 ノリコ 美香 ミカ 純子 ジュンコ 尚子 ナオコ 亜希子 アキコ 麻美 アサミ
千尋 チヒロ 由香 ユカ 美紀 ミキ 綾 アヤ 奈美 ナミ 理恵 リエ
""",
    """
陽菜 ヒナ 結衣 ユイ 美咲 ミサキ 葵 アオイ 凛 リン 結菜 ユイナ 莉子 リコ 芽依 メイ 紬 ツムギ
陽葵 ヒマリ 杏 アン さくら サクラ 美羽 ミウ 彩花 アヤカ 七海 ナナミ 花 ハナ 心春 コハル
澪 ミオ 楓 カエデ 咲良 サクラ 琴音 コトネ 結愛 ユア 真央 マオ 優奈 ユウナ 愛莉 アイリ
美月 ミヅキ/ミツキ 遥 ハルカ 菜々子 ナナコ 詩 ウタ 杏奈 アンナ
""",
)
_COHORT_BOUNDS: Final = (1960, 1990)  # birth years where the given-name lists change

# Foreign residents (2.7 % of residents nationally, about 1.2 % in Yamaguchi). Names
# as the register writes them: alphabet for most nationalities, kanji for Chinese and
# Korean; the reading in katakana with a space between the parts. Latin names use an
# ASCII space, kanji names an ideographic one, like Japanese names.
#   nationality share alias-share | surnames | male given | female given
# 通称 (an alias used in daily life) is recorded mostly by Korean special permanent
# residents and some Chinese residents; 旧氏 is for Japanese nationals only.
_FOREIGN_DATA: Final = (
    (
        "VN",
        0.30,
        0.02,
        "NGUYEN グエン TRAN チャン LE レー PHAM ファム HOANG ホアン VU ヴー DANG ダン BUI ブイ",
        "VAN_AN ヴァン_アン VAN_HUNG ヴァン_フン DUC_MINH ドゥック_ミン QUANG_HUY クアン_フイ",
        "THI_LAN ティ_ラン THI_HOA ティ_ホア THI_MAI ティ_マイ THU_HANG トゥ_ハン",
    ),
    (
        "CN",
        0.25,
        0.15,
        "王 ワン 李 リー 張 チャン 劉 リウ 陳 チェン 楊 ヤン",
        "偉 ウェイ 浩 ハオ 強 チアン 磊 レイ 軍 ジュン",
        "芳 ファン 娜 ナー 静 ジン 麗 リー 敏 ミン",
    ),
    (
        "KR",
        0.20,
        0.50,
        "金 キム 李 イ 朴 パク 崔 チェ 鄭 チョン 姜 カン",
        "英洙 ヨンス 成浩 ソンホ 民俊 ミンジュン 正煥 ジョンファン",
        "美英 ミヨン 順子 スンジャ 恩恵 ウネ 秀晶 スジョン",
    ),
    (
        "PH",
        0.15,
        0.02,
        "SANTOS サントス REYES レイエス CRUZ クルス GARCIA ガルシア BAUTISTA バウティスタ",
        "JOSE ホセ MARK マーク JOHN ジョン",
        "MARIA マリア ANNA アンナ JOY ジョイ",
    ),
    (
        "BR",
        0.10,
        0.02,
        "SILVA シルバ SOUZA ソウザ OLIVEIRA オリヴェイラ PEREIRA ペレイラ",
        "LUCAS ルーカス GABRIEL ガブリエル RAFAEL ハファエル",
        "ANA アナ JULIANA ジュリアナ BEATRIZ ベアトリス",
    ),
)


@dataclass(frozen=True, slots=True)
class _Name:
    kanji: str  # or alphabet, for foreign residents
    readings: tuple[str, ...]  # katakana; the first is the usual one


def _parse_names(data: str) -> tuple[_Name, ...]:
    words = data.split()
    # "_" stands for the space inside a multi-part foreign given name: an ASCII space
    # in the name (VAN AN), an ideographic one in the reading (ヴァン　アン).
    return tuple(
        _Name(k.replace("_", " "), tuple(r.replace("_", _IDEOGRAPHIC_SPACE).split("/")))
        for k, r in zip(words[::2], words[1::2], strict=True)
    )


_SURNAMES: Final = _parse_names(_SURNAME_DATA)
_MALE_GIVEN: Final = tuple(_parse_names(d) for d in _MALE_GIVEN_DATA)
_FEMALE_GIVEN: Final = tuple(_parse_names(d) for d in _FEMALE_GIVEN_DATA)
# Surname frequencies fall off roughly as a power of the rank (佐藤 1.8 M people,
# the 200th name about 60 k): weights 1/rank^0.8 give that spread.
_SURNAME_CUM: Final = list(
    itertools.accumulate(1.0 / (rank**0.8) for rank in range(1, len(_SURNAMES) + 1))
)


@dataclass(frozen=True, slots=True)
class _Nationality:
    code: str
    share: float
    alias_share: float
    surnames: tuple[_Name, ...]
    male: tuple[_Name, ...]
    female: tuple[_Name, ...]


_NATIONALITIES: Final = tuple(
    _Nationality(c, s, a, _parse_names(sur), _parse_names(m), _parse_names(f))
    for c, s, a, sur, m, f in _FOREIGN_DATA
)
_NATIONALITY_CUM: Final = list(itertools.accumulate(n.share for n in _NATIONALITIES))
_BY_NATIONALITY: Final = {n.code: n for n in _NATIONALITIES}

_ALT_READINGS: Final = {
    n.kanji: n.readings
    for n in itertools.chain(_SURNAMES, *_MALE_GIVEN, *_FEMALE_GIVEN)
    if len(n.readings) > 1
}

# --- reference data: ages ---------------------------------------------------------------

# Japan's residents by 5-year age band (thousands, 2023) and the female share of the
# band: the ageing pyramid, ~29 % aged 65+, women the majority from the 70s on.
_AGE_BANDS: Final = (
    (0, 4200, 0.488),
    (5, 4900, 0.488),
    (10, 5300, 0.488),
    (15, 5500, 0.487),
    (20, 6200, 0.485),
    (25, 6300, 0.485),
    (30, 6500, 0.488),
    (35, 7300, 0.490),
    (40, 8100, 0.492),
    (45, 9600, 0.494),
    (50, 9400, 0.497),
    (55, 8000, 0.500),
    (60, 7400, 0.505),
    (65, 7800, 0.515),
    (70, 9300, 0.530),
    (75, 7500, 0.560),
    (80, 6200, 0.600),
    (85, 4300, 0.660),
    (90, 2000, 0.740),
    (95, 550, 0.820),
    (100, 90, 0.880),
)
_AGE_CUM: Final = list(itertools.accumulate(b[1] for b in _AGE_BANDS))
_MAX_AGE: Final = 125


def _mortality(age: int) -> float:
    # Gompertz law fitted to Japan's life table: ~0.04 %/year at 30, 0.2 % at 50,
    # 10 % at 90, ~30 % at 100; infants somewhat higher than young children.
    base = 0.0002 + 0.00002 * math.exp(0.095 * age)
    return min(0.5, base + (0.0015 if age == 0 else 0.0))


def _mobility(age: int) -> float:
    # Relative propensity to move house by age: highest for students and young
    # workers (the March-April season), children moving with their parents.
    if age < 18:
        return 0.5
    if age < 20:
        return 1.5
    if age < 30:
        return 2.5
    if age < 40:
        return 1.5
    if age < 50:
        return 0.8
    if age < 65:
        return 0.5
    return 0.3


_MORTALITY: Final = [_mortality(a) for a in range(_MAX_AGE + 1)]
_MOBILITY: Final = [_mobility(a) for a in range(_MAX_AGE + 1)]
_MOBILITY_MAX: Final = max(_MOBILITY)


# --- the change mix ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChangeMix:
    """How often each kind of change happens nationally per year, in millions.

    Only the proportions matter: the generator draws each event with probability
    proportional to these. A domestic move is one event and two updates (転出 and
    転入). Figures marked domain.md are from there; the rest are assumptions.
    """

    # domain.md: ~4.8 M 転入 a year (2023), each the second half of a move whose
    # first half is a 転出 (domain.md's 4.9 M 転出 also counts moves abroad).
    domestic_moves: float = 4.8
    births: float = 0.73  # domain.md (2023)
    deaths: float = 1.58  # domain.md (2023)
    # Assumption: foreign residents grow by ~0.25 M a year, so more arrive than leave.
    moves_from_abroad: float = 0.5
    moves_abroad: float = 0.25
    # Assumption: moves within a municipality about as common as between them.
    address_changes: float = 4.0
    # ~0.47 M marriages a year, most of them changing one spouse's surname, which the
    # register applies by authority from the family-register notification (職権修正).
    corrections_by_authority: float = 0.55
    error_corrections: float = 0.05  # assumption
    kojin_bango_changes: float = 0.01  # assumption: replaced on request after a leak
    juminhyo_code_changes: float = 0.005  # assumption: changed on request
    former_surname_alias: float = 0.1  # assumption: 旧氏/通称 entries and removals
    entries_by_authority: float = 0.02  # assumption
    removals_by_authority: float = 0.1  # assumption: whereabouts unknown (職権消除)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"ChangeMix.{f.name} must be a finite number >= 0: {value}")

    def update_shares(self) -> dict[ChangeReason, float]:
        """The expected share of each 異動事由 among the updates of a long stream."""
        counts = {
            ChangeReason.MOVE_OUT: self.domestic_moves,
            ChangeReason.MOVE_IN: self.domestic_moves,
            ChangeReason.BIRTH: self.births,
            ChangeReason.DEATH: self.deaths,
            ChangeReason.MOVE_IN_FROM_ABROAD: self.moves_from_abroad,
            ChangeReason.MOVE_OUT_ABROAD: self.moves_abroad,
            ChangeReason.ADDRESS_CHANGE: self.address_changes,
            ChangeReason.CORRECTION_BY_AUTHORITY: self.corrections_by_authority,
            ChangeReason.ERROR_CORRECTION: self.error_corrections,
            ChangeReason.KOJIN_BANGO_CHANGE: self.kojin_bango_changes,
            ChangeReason.JUMINHYO_CODE_CHANGE: self.juminhyo_code_changes,
            ChangeReason.FORMER_SURNAME_ALIAS: self.former_surname_alias,
            ChangeReason.ENTRY_BY_AUTHORITY: self.entries_by_authority,
            ChangeReason.REMOVAL_BY_AUTHORITY: self.removals_by_authority,
        }
        total = sum(counts.values())
        if total <= 0:
            raise ValueError("ChangeMix has no changes at all")
        return {reason: n / total for reason, n in counts.items()}

    def _events(self) -> list[tuple[ChangeReason, float]]:
        # One entry per kind of event; a domestic move is keyed by its MOVE_OUT.
        return [
            (ChangeReason.MOVE_OUT, self.domestic_moves),
            (ChangeReason.BIRTH, self.births),
            (ChangeReason.DEATH, self.deaths),
            (ChangeReason.MOVE_IN_FROM_ABROAD, self.moves_from_abroad),
            (ChangeReason.MOVE_OUT_ABROAD, self.moves_abroad),
            (ChangeReason.ADDRESS_CHANGE, self.address_changes),
            (ChangeReason.CORRECTION_BY_AUTHORITY, self.corrections_by_authority),
            (ChangeReason.ERROR_CORRECTION, self.error_corrections),
            (ChangeReason.KOJIN_BANGO_CHANGE, self.kojin_bango_changes),
            (ChangeReason.JUMINHYO_CODE_CHANGE, self.juminhyo_code_changes),
            (ChangeReason.FORMER_SURNAME_ALIAS, self.former_surname_alias),
            (ChangeReason.ENTRY_BY_AUTHORITY, self.entries_by_authority),
            (ChangeReason.REMOVAL_BY_AUTHORITY, self.removals_by_authority),
        ]


DEFAULT_MIX: Final = ChangeMix()

# Relative frequency of moves by month (January first): the moving season peaks in
# March-April, April about 1.6x the monthly average (domain.md). Applies to every kind
# of move (転出/転入, 転居, abroad); births, deaths and corrections are flat.
MOVING_SEASON: Final = (0.85, 0.9, 1.45, 1.6, 0.95, 0.85, 0.85, 0.85, 0.85, 0.9, 0.85, 0.9)

_SEASONAL: Final = frozenset(
    {
        ChangeReason.MOVE_OUT,
        ChangeReason.MOVE_IN_FROM_ABROAD,
        ChangeReason.MOVE_OUT_ABROAD,
        ChangeReason.ADDRESS_CHANGE,
    }
)
_REMOVALS: Final = frozenset(
    {ChangeReason.DEATH, ChangeReason.MOVE_OUT_ABROAD, ChangeReason.REMOVAL_BY_AUTHORITY}
)
_NEWCOMERS: Final = frozenset(
    {ChangeReason.BIRTH, ChangeReason.MOVE_IN_FROM_ABROAD, ChangeReason.ENTRY_BY_AUTHORITY}
)


# --- residents ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Resident:
    """One synthetic resident as the population holds them (before any change).

    `nationality` (None for Japanese nationals) is the generator's own bookkeeping:
    like 本籍 it never leaves the municipality, so it is not in `Update`.
    """

    juminhyo_code: str
    kojin_bango: str
    surname: str
    given_name: str
    surname_kana: str
    given_kana: str
    former_surname: str | None
    alias: str | None
    birth_date: dt.date
    sex: Sex
    municipality: str
    address: str
    nationality: str | None

    @property
    def name(self) -> str:
        return _join_name(self.surname, self.given_name)

    @property
    def name_kana(self) -> str:
        return self.surname_kana + _IDEOGRAPHIC_SPACE + self.given_kana


def _join_name(surname: str, given: str) -> str:
    return surname + (" " if surname.isascii() else _IDEOGRAPHIC_SPACE) + given


@dataclass(frozen=True, slots=True)
class Population:
    """Residents on `as_of`: where a change stream starts (see `generate_changes`)."""

    residents: tuple[Resident, ...]
    as_of: dt.date
    municipalities: tuple[Municipality, ...]
    juminhyo_check_digit: CheckDigit
    seed: int

    def __len__(self) -> int:
        return len(self.residents)


class _Codes:
    """Issues unique codes; remembers every code ever issued, retired ones included."""

    __slots__ = ("_check", "_rng", "juminhyo", "kojin")

    def __init__(self, rng: random.Random, check: CheckDigit) -> None:
        self._rng = rng
        self._check = check
        self.juminhyo: set[str] = set()
        self.kojin: set[str] = set()

    def new_juminhyo(self) -> str:
        while True:
            first = f"{self._rng.randrange(10**10):010d}"
            code = first + str(self._check(first))
            if code not in self.juminhyo:
                self.juminhyo.add(code)
                return code

    def new_kojin(self) -> str:
        while True:
            first = f"{self._rng.randrange(10**11):011d}"
            code = first + str(kojin_bango_check_digit(first))
            if code not in self.kojin:
                self.kojin.add(code)
                return code


_KANJI_NUMERALS: Final = "〇一二三四五六七八九"


def _kanji_number(n: int) -> str:
    # 丁目 are written in kanji numerals on the register (二丁目, 十二丁目).
    if n < 10:
        return _KANJI_NUMERALS[n]
    tens, ones = divmod(n, 10)
    return (
        ("" if tens == 1 else _KANJI_NUMERALS[tens])
        + "十"
        + ("" if ones == 0 else _KANJI_NUMERALS[ones])
    )


def _address(rng: random.Random, muni: Municipality) -> str:
    town = muni.towns[int(rng.random() * len(muni.towns))]
    if town.chome > 0:
        chome = 1 + int(rng.random() * town.chome)
        ban = 1 + int(rng.random() * 30)
        go = 1 + int(rng.random() * 25)
        return f"{muni.prefix}{town.name}{_kanji_number(chome)}丁目{ban}番{go}号"
    if town.chome == 0:
        return (
            f"{muni.prefix}{town.name}{1 + int(rng.random() * 40)}番{1 + int(rng.random() * 30)}号"
        )
    banchi = 1 + int(rng.random() * 3000)
    if rng.random() < 0.3:  # with a 枝番: "1234番地5"
        return f"{muni.prefix}{town.name}{banchi}番地{1 + int(rng.random() * 9)}"
    return f"{muni.prefix}{town.name}{banchi}番地"


def _pick(rng: random.Random, cum: Sequence[float]) -> int:
    """An index drawn with weights given as their running sums."""
    # min(): random() * total can round up to total itself.
    return min(bisect.bisect_right(cum, rng.random() * cum[-1]), len(cum) - 1)


def _cohort(birth_year: int) -> int:
    return bisect.bisect_right(_COHORT_BOUNDS, birth_year)


def _given_name(rng: random.Random, sex: Sex, birth_year: int, nat: _Nationality | None) -> _Name:
    if nat is None:
        names = (_MALE_GIVEN if sex is Sex.MALE else _FEMALE_GIVEN)[_cohort(birth_year)]
    else:
        names = nat.male if sex is Sex.MALE else nat.female
    return names[int(rng.random() * len(names))]


def _japanese_surname(rng: random.Random, other_than: str | None = None) -> _Name:
    while True:
        name = _SURNAMES[_pick(rng, _SURNAME_CUM)]
        if name.kanji != other_than:
            return name


def _alias(rng: random.Random, sex: Sex, birth_year: int) -> str:
    # A 通称 is an ordinary Japanese name the resident uses in daily life.
    return _join_name(_japanese_surname(rng).kanji, _given_name(rng, sex, birth_year, None).kanji)


class _Person:
    """The generator's mutable state of one resident."""

    __slots__ = (
        "address",
        "alias",
        "birth",
        "birth_ord",
        "code",
        "former",
        "given",
        "given_kana",
        "kojin",
        "muni",
        "nationality",
        "pos",
        "sex",
        "surname",
        "surname_kana",
        "ypos",
    )

    def __init__(self, r: Resident) -> None:
        self.code = r.juminhyo_code
        self.kojin = r.kojin_bango
        self.surname = r.surname
        self.given = r.given_name
        self.surname_kana = r.surname_kana
        self.given_kana = r.given_kana
        self.former = r.former_surname
        self.alias = r.alias
        self.birth = r.birth_date
        self.birth_ord = r.birth_date.toordinal()
        self.sex = r.sex
        self.muni = r.municipality
        self.address = r.address
        self.nationality = r.nationality
        self.pos = -1  # index in the active list, -1 when not active
        self.ypos = -1  # index in the active list of its birth year

    def update(
        self,
        reason: ChangeReason,
        changed_on: dt.date,
        recorded_at: int,
        previous_code: str | None = None,
    ) -> Update:
        return Update(
            seq=0,  # the publisher assigns it
            juminhyo_code=self.code,
            previous_juminhyo_code=previous_code,
            kojin_bango=self.kojin,
            name=_join_name(self.surname, self.given),
            name_kana=self.surname_kana + _IDEOGRAPHIC_SPACE + self.given_kana,
            former_surname=self.former,
            alias=self.alias,
            birth_date=self.birth,
            sex=self.sex,
            address=self.address,
            municipality=self.muni,
            reason=reason,
            changed_on=changed_on,
            recorded_at=recorded_at,
        )


def _new_resident(
    rng: random.Random,
    codes: _Codes,
    muni: Municipality,
    birth_date: dt.date,
    sex: Sex,
    *,
    foreign_share: float,
    as_of: dt.date,
    address: str | None = None,
    parent: _Person | None = None,
) -> Resident:
    """A new resident; a newborn (`parent` given) takes the parent's surname and address."""
    if parent is not None:
        nat = _BY_NATIONALITY.get(parent.nationality) if parent.nationality else None
        surname, surname_kana = parent.surname, parent.surname_kana
    else:
        nat = None
        if rng.random() < foreign_share:
            nat = _NATIONALITIES[_pick(rng, _NATIONALITY_CUM)]
            name = nat.surnames[int(rng.random() * len(nat.surnames))]
        else:
            name = _japanese_surname(rng)
        surname, surname_kana = name.kanji, name.readings[0]
    given = _given_name(rng, sex, birth_date.year, nat)
    age = (as_of - birth_date).days // 365
    former = alias = None
    if nat is None:
        # 旧氏 (since 2019, on request): mostly married women keeping their maiden name.
        if age >= 25 and rng.random() < (0.03 if sex is Sex.FEMALE else 0.002):
            former = _japanese_surname(rng, other_than=surname).kanji
    elif age >= 18 and rng.random() < nat.alias_share:
        alias = _alias(rng, sex, birth_date.year)
    return Resident(
        juminhyo_code=codes.new_juminhyo(),
        kojin_bango=codes.new_kojin(),
        surname=surname,
        given_name=given.kanji,
        surname_kana=surname_kana,
        given_kana=given.readings[0],
        former_surname=former,
        alias=alias,
        birth_date=birth_date,
        sex=sex,
        municipality=muni.code,
        address=address if address is not None else _address(rng, muni),
        nationality=nat.code if nat else None,
    )


def _random_birth(rng: random.Random, as_of: dt.date) -> tuple[dt.date, Sex]:
    band = _AGE_BANDS[_pick(rng, _AGE_CUM)]
    start_age, _, female_share = band
    # Uniform over the band's 5 years, never later than the day before `as_of`.
    days = int((start_age + rng.random() * 5) * 365.2425)
    birth = as_of - dt.timedelta(days=max(1, days))
    sex = Sex.FEMALE if rng.random() < female_share else Sex.MALE
    return birth, sex


def _check_municipalities(municipalities: Sequence[Municipality]) -> tuple[Municipality, ...]:
    result = tuple(municipalities)
    if not result:
        raise ValueError("at least one municipality is needed")
    for m in result:
        if m.prefecture not in PREFECTURES:
            raise ValueError(f"{m.code} {m.name}: prefecture {m.prefecture} has no name here")
        if local_government_check_digit(m.code[:5]) != int(m.code[5]):
            raise ValueError(f"{m.code} {m.name}: wrong check digit (JIS X 0402)")
        if not m.towns or m.weight <= 0:
            raise ValueError(f"{m.code} {m.name}: needs towns and a positive weight")
    if len({m.code for m in result}) != len(result):
        raise ValueError("municipality codes must be unique")
    return result


def generate_population(
    residents: int,
    seed: int,
    municipalities: Sequence[Municipality] = MUNICIPALITIES,
    *,
    as_of: dt.date = DEFAULT_AS_OF,
    foreign_share: float = 0.02,
    juminhyo_check_digit: CheckDigit = placeholder_juminhyo_check_digit,
) -> Population:
    """`residents` people living in `municipalities` (weighted by `weight`) on `as_of`."""
    if residents < 0:
        raise ValueError(f"residents must be >= 0: {residents}")
    if not 0 <= foreign_share <= 1:
        raise ValueError(f"foreign_share must be within 0..1: {foreign_share}")
    munis = _check_municipalities(municipalities)
    # The population and the change stream take independent generators derived from the
    # seed, so asking for more residents does not shift the codes of the first ones.
    rng = random.Random(f"jukisync.synth.population:{seed}")
    codes = _Codes(rng, juminhyo_check_digit)
    muni_cum = list(itertools.accumulate(m.weight for m in munis))
    people = []
    for _ in range(residents):
        muni = munis[_pick(rng, muni_cum)]
        birth, sex = _random_birth(rng, as_of)
        people.append(
            _new_resident(rng, codes, muni, birth, sex, foreign_share=foreign_share, as_of=as_of)
        )
    return Population(tuple(people), as_of, munis, juminhyo_check_digit, seed)


def _day_start_us(day: dt.date) -> int:
    """Microseconds since the epoch at 00:00 Japan time on `day`."""
    start = dt.datetime(day.year, day.month, day.day, tzinfo=_JST)
    return (start - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


def initial_load(population: Population) -> Iterator[tuple[str, Update]]:
    """Every resident as a creation update from their municipality, to seed a store.

    A baby born in the year before `as_of` comes as its 出生 (changed on its birth
    date); everyone else as 職権記載 on the day before `as_of`. The updates are in
    time order, all before `as_of` (Japan time), so a change stream starting on
    `as_of` supersedes them under the conflict rule (DESIGN.md §3).
    """
    load_day = population.as_of - dt.timedelta(days=1)
    year_ago = population.as_of - dt.timedelta(days=365)
    dated = []
    for i, r in enumerate(population.residents):
        if r.birth_date > year_ago:
            dated.append((r.birth_date, i, ChangeReason.BIRTH))
        else:
            dated.append((load_day, i, ChangeReason.ENTRY_BY_AUTHORITY))
    dated.sort()
    for day, group in itertools.groupby(dated, key=lambda item: item[0]):
        items = list(group)
        base = _day_start_us(day)
        step = _US_PER_DAY // (len(items) + 1)  # spread over the day, strictly increasing
        for k, (_, i, reason) in enumerate(items, start=1):
            person = _Person(population.residents[i])
            yield person.muni, person.update(reason, day, base + k * step)


# --- the change stream ----------------------------------------------------------------------


class _Active:
    """The residents that can change: O(1) random pick, add and remove, overall and
    within a birth year (for picks weighted by age, such as who dies)."""

    __slots__ = ("by_year", "people")

    def __init__(self) -> None:
        self.people: list[_Person] = []
        self.by_year: dict[int, list[_Person]] = {}

    def add(self, p: _Person) -> None:
        p.pos = len(self.people)
        self.people.append(p)
        cohort = self.by_year.setdefault(p.birth.year, [])
        p.ypos = len(cohort)
        cohort.append(p)

    def remove(self, p: _Person) -> None:
        last = self.people.pop()
        if last is not p:
            self.people[p.pos] = last
            last.pos = p.pos
        p.pos = -1
        cohort = self.by_year[p.birth.year]
        last = cohort.pop()
        if last is not p:
            cohort[p.ypos] = last
            last.ypos = p.ypos
        p.ypos = -1

    def __len__(self) -> int:
        return len(self.people)


# The 転入 of a move comes up to this many days after its 転出 (see generate_changes).
MOVE_IN_LAG_DAYS: Final = 14


def span_until(start: dt.date, today: dt.date, max_span_days: int = 3653) -> int:
    """A `max_span_days` for `generate_changes` from `start` whose stream ends before
    `today` (even the last moves' 転入s), so that no tier refuses it as future-dated
    (they bound every date by their clock); at least 1 day."""
    return max(1, min(max_span_days, (today - start).days - MOVE_IN_LAG_DAYS - 1))


def generate_changes(
    population: Population,
    changes: int,
    seed: int,
    start: dt.date | None = None,
    *,
    mix: ChangeMix = DEFAULT_MIX,
    seasonality: Sequence[float] | None = MOVING_SEASON,
    max_span_days: int = 3653,
    foreign_share: float = 0.02,
) -> Iterator[tuple[str, Update]]:
    """Exactly `changes` updates as `(origin, update)`, in time order from `start`.

    `origin` is always `update.municipality`: the municipality that sends the update.
    `(changed_on, recorded_at)` strictly increases along the stream; `changed_on` is
    the Japan-time date of `recorded_at`. Events arrive at the national rate per
    resident (so a small population changes slowly), except that the stream is
    squeezed into about `max_span_days` if it would last longer (the 転入s of the last
    moves can come up to 14 days later). `seasonality` (12 monthly factors, or None for
    flat) shapes when people move.

    A stream much longer than the population is large (say, 10 updates per resident)
    stays internally consistent but ages oddly: deaths keep their share of the
    updates, so the old die out faster than the young grow old.

    The population is not modified. If no resident is left who could be the subject
    of a drawn change (a tiny population that died out), the event becomes a move-in
    from abroad instead.
    """
    if changes < 0:
        raise ValueError(f"changes must be >= 0: {changes}")
    if max_span_days < 1:
        raise ValueError(f"max_span_days must be >= 1: {max_span_days}")
    start = population.as_of if start is None else start
    if start < population.as_of:
        raise ValueError(f"start {start} is before the population's date {population.as_of}")
    season = tuple(seasonality) if seasonality is not None else (1.0,) * 12
    if len(season) != 12 or any(not (f > 0 and math.isfinite(f)) for f in season):
        raise ValueError("seasonality needs 12 positive monthly factors")
    mean = sum(season) / 12
    season = tuple(f / mean for f in season)
    gen = _Generator(population, seed, mix, season, foreign_share, start)
    return gen.run(changes, max_span_days)


class _Generator:
    def __init__(
        self,
        population: Population,
        seed: int,
        mix: ChangeMix,
        season: tuple[float, ...],
        foreign_share: float,
        start: dt.date,
    ) -> None:
        self.start = start
        self.epoch_us = _day_start_us(start)
        self.day_cache: dict[int, dt.date] = {}
        self.rng = random.Random(f"jukisync.synth.changes:{seed}")
        self.foreign_share = foreign_share
        self.munis = {m.code: m for m in population.municipalities}
        self.muni_list = population.municipalities
        self.muni_cum = list(itertools.accumulate(m.weight for m in self.muni_list))
        # Same-prefecture destinations for moves that stay within the prefecture.
        self.by_pref: dict[str, tuple[list[Municipality], list[float]]] = {}
        for pref in {m.prefecture for m in self.muni_list}:
            ms = [m for m in self.muni_list if m.prefecture == pref]
            self.by_pref[pref] = (ms, list(itertools.accumulate(m.weight for m in ms)))
        self.codes = _Codes(self.rng, population.juminhyo_check_digit)
        for r in population.residents:
            self.codes.juminhyo.add(r.juminhyo_code)
            self.codes.kojin.add(r.kojin_bango)
        self.active = _Active()
        for r in population.residents:
            self.active.add(_Person(r))

        events = mix._events()
        if sum(w for _, w in events) <= 0:
            raise ValueError("ChangeMix has no changes at all")
        self.kinds = [reason for reason, _ in events]
        # Per month: cumulative weights for the draw, and the month's event rate
        # relative to a flat year (more events per day in the moving season).
        base_total = sum(w for _, w in events)
        self.month_cum: list[list[float]] = []
        self.month_rate: list[float] = []
        for factor in season:
            weights = [w * (factor if r in _SEASONAL else 1.0) for r, w in events]
            self.month_cum.append(list(itertools.accumulate(weights)))
            self.month_rate.append(sum(weights) / base_total)
        self.events_per_update = base_total / (base_total + mix.domestic_moves)
        self.per_resident_year = (base_total + mix.domestic_moves) * 1e6 / _NATIONAL_RESIDENTS
        self.start_population = len(population.residents)

    # -- time --

    def _date(self, us: int) -> dt.date:
        day = (us - self.epoch_us) // _US_PER_DAY
        cached = self.day_cache.get(day)
        if cached is None:
            cached = self.day_cache[day] = self.start + dt.timedelta(days=day)
        return cached

    # -- picking subjects --

    def _age(self, p: _Person, today_ord: int) -> int:
        return min(_MAX_AGE, max(0, (today_ord - p.birth_ord) // 365))

    def _any(self) -> _Person | None:
        people = self.active.people
        return people[int(self.rng.random() * len(people))] if people else None

    def _by_table(self, table: list[float], table_max: float, today: int) -> _Person | None:
        # Rejection sampling: uniform candidates accepted in proportion to the table
        # value of their age (mortality, mobility); after many misses take the last.
        # The hot loop of the generator (a death takes ~30 draws): ages inlined.
        people = self.active.people
        if not people:
            return None
        rand = self.rng.random
        n = len(people)
        p = people[0]
        for _ in range(500):
            p = people[int(rand() * n)]
            age = (today - p.birth_ord) // 365
            if rand() * table_max < table[age if age < _MAX_AGE else _MAX_AGE]:
                return p
        return p

    def _dying(self, year: int) -> _Person | None:
        # Weighted by mortality exactly, per birth year: rejection sampling would stall
        # once a long stream has taken most of the old (a population that dies ten
        # times faster than it ages), while a walk over ~125 cohorts stays cheap.
        cohorts = [c for c in self.active.by_year.items() if c[1]]
        if not cohorts:
            return None
        cum = list(
            itertools.accumulate(
                len(c) * _MORTALITY[min(_MAX_AGE, max(0, year - y))] for y, c in cohorts
            )
        )
        cohort = cohorts[_pick(self.rng, cum)][1]
        return cohort[int(self.rng.random() * len(cohort))]

    def _matching(self, accept: Callable[[_Person], bool]) -> _Person | None:
        people = self.active.people
        for _ in range(100):
            if not people:
                return None
            p = people[int(self.rng.random() * len(people))]
            if accept(p):
                return p
        return None

    def _destination(self, origin: str) -> Municipality | None:
        if len(self.muni_list) < 2:
            return None
        here = self.munis.get(origin)
        rng = self.rng
        # About half of moves between municipalities stay within the prefecture.
        if here is not None and rng.random() < 0.5:
            ms, cum = self.by_pref[here.prefecture]
            if len(ms) > 1:
                while True:
                    m = ms[_pick(rng, cum)]
                    if m.code != origin:
                        return m
        while True:
            m = self.muni_list[_pick(rng, self.muni_cum)]
            if m.code != origin:
                return m

    # -- the stream --

    def run(self, changes: int, max_span_days: int) -> Iterator[tuple[str, Update]]:
        rng = self.rng
        updates_per_day = max(
            self.start_population * self.per_resident_year / 365.2425,
            changes / max_span_days,
        )
        events_per_us = updates_per_day * self.events_per_update / _US_PER_DAY
        now = self.epoch_us
        last = now  # the last recorded_at emitted; every next one is strictly later
        emitted = 0
        # Moves in progress: (time of the 転入, tiebreak, person, destination, address).
        pending: list[tuple[int, int, _Person, str, str]] = []
        tiebreak = itertools.count()

        def move_in(entry: tuple[int, int, _Person, str, str]) -> tuple[str, Update]:
            nonlocal last
            at, _, p, dest, address = entry
            last = max(at, last + 1)
            p.muni, p.address = dest, address
            self.active.add(p)
            return dest, p.update(ChangeReason.MOVE_IN, self._date(last), last)

        while emitted < changes:
            free = changes - emitted - len(pending)
            if free <= 0:
                # Only the second halves of moves fit: finish them, in time order.
                while pending:
                    yield move_in(heapq.heappop(pending))
                    emitted += 1
                break
            month = self._date(now).month - 1
            rate = events_per_us * self.month_rate[month]
            gap = rng.expovariate(rate) if rate > 0 else 1.0
            now += max(1, int(gap))
            while pending and pending[0][0] <= now:
                yield move_in(heapq.heappop(pending))
                emitted += 1
            if emitted >= changes:
                break
            free = changes - emitted - len(pending)
            if free <= 0:
                continue
            kind = self.kinds[_pick(rng, self.month_cum[month])]
            last = max(now, last + 1)
            now = last
            today = self._date(last)
            result = self._event(kind, today, last, free, pending, tiebreak)
            if result is not None:
                yield result
                emitted += 1

    def _event(
        self,
        kind: ChangeReason,
        today: dt.date,
        at: int,
        free: int,
        pending: list[tuple[int, int, _Person, str, str]],
        tiebreak: Iterator[int],
    ) -> tuple[str, Update]:
        rng = self.rng
        today_ord = today.toordinal()
        p: _Person | None = None
        if kind is ChangeReason.MOVE_OUT:
            # A move takes two updates: only start one if both fit in the stream.
            if free >= 2 and len(self.muni_list) > 1:
                p = self._by_table(_MOBILITY, _MOBILITY_MAX, today_ord)
            if p is None:
                kind = ChangeReason.ADDRESS_CHANGE
            else:
                dest = self._destination(p.muni)
                assert dest is not None  # more than one municipality
                origin = p.muni
                self.active.remove(p)
                # The 転入 is notified within 14 days of moving (住基法 第22条).
                arrive = at + 1 + int((0.5 + rng.random() * 13.5) * _US_PER_DAY)
                address = _address(rng, dest)
                heapq.heappush(pending, (arrive, next(tiebreak), p, dest.code, address))
                return origin, p.update(ChangeReason.MOVE_OUT, today, at)

        if kind in _NEWCOMERS or not self.active.people:
            return self._newcomer(kind if kind in _NEWCOMERS else None, today, at)

        if kind is ChangeReason.DEATH:
            p = self._dying(today.year)
        elif kind in (ChangeReason.MOVE_OUT_ABROAD, ChangeReason.REMOVAL_BY_AUTHORITY):
            p = self._abroad_candidate(today_ord)
        elif kind is ChangeReason.ADDRESS_CHANGE:
            p = self._by_table(_MOBILITY, _MOBILITY_MAX, today_ord)
        else:
            p = self._any()
        assert p is not None  # the active list is not empty

        if kind in _REMOVALS:
            # The record stays as it was (除票), with its last address; never changed again.
            self.active.remove(p)
            return p.muni, p.update(kind, today, at)
        previous_code = None
        if kind is ChangeReason.ADDRESS_CHANGE:
            p.address = self._new_address(p.address, self.munis[p.muni])
        elif kind is ChangeReason.CORRECTION_BY_AUTHORITY:
            p = self._correct_by_authority(p, today_ord)
        elif kind is ChangeReason.ERROR_CORRECTION:
            self._correct_error(p, today_ord)
        elif kind is ChangeReason.KOJIN_BANGO_CHANGE:
            p.kojin = self.codes.new_kojin()
        elif kind is ChangeReason.JUMINHYO_CODE_CHANGE:
            previous_code = p.code
            p.code = self.codes.new_juminhyo()
        elif kind is ChangeReason.FORMER_SURNAME_ALIAS:
            self._toggle_former_or_alias(p)
        return p.muni, p.update(kind, today, at, previous_code)

    def _abroad_candidate(self, today_ord: int) -> _Person | None:
        # Foreign residents leave the country far more often than nationals do.
        people = self.active.people
        rng = self.rng
        p = people[0]
        for _ in range(500):
            p = people[int(rng.random() * len(people))]
            weight = _MOBILITY[self._age(p, today_ord)] * (10.0 if p.nationality else 1.0)
            if rng.random() * _MOBILITY_MAX * 10.0 < weight:
                return p
        return p

    def _new_address(self, old: str, muni: Municipality) -> str:
        for _ in range(10):
            address = _address(self.rng, muni)
            if address != old:
                return address
        return address

    def _newcomer(self, kind: ChangeReason | None, today: dt.date, at: int) -> tuple[str, Update]:
        rng = self.rng
        today_ord = today.toordinal()
        mother: _Person | None = None
        if kind is ChangeReason.BIRTH:
            mother = self._matching(
                lambda p: p.sex is Sex.FEMALE and 20 <= self._age(p, today_ord) < 45
            )
            if mother is None:
                mother = self._matching(lambda p: p.sex is Sex.FEMALE)
        if kind is None:
            kind = ChangeReason.MOVE_IN_FROM_ABROAD
        if mother is not None:
            muni = self.munis[mother.muni]
            birth, sex = today, (Sex.MALE if rng.random() < 105 / 205 else Sex.FEMALE)
            resident = _new_resident(
                rng,
                self.codes,
                muni,
                birth,
                sex,
                foreign_share=self.foreign_share,
                as_of=today,
                address=mother.address,
                parent=mother,
            )
        else:
            muni = self.muni_list[_pick(rng, self.muni_cum)]
            if kind is ChangeReason.BIRTH:
                birth = today
                sex = Sex.MALE if rng.random() < 105 / 205 else Sex.FEMALE
            else:
                # Arrivals from abroad and entries by authority are mostly young adults.
                birth = today - dt.timedelta(days=int((18 + rng.random() * 30) * 365.2425))
                sex = Sex.MALE if rng.random() < 0.5 else Sex.FEMALE
            share = self.foreign_share
            if kind is ChangeReason.MOVE_IN_FROM_ABROAD:
                # Most arrivals from abroad are foreign nationals, the rest returnees.
                share = max(share, 0.7)
            resident = _new_resident(
                rng, self.codes, muni, birth, sex, foreign_share=share, as_of=today
            )
        p = _Person(resident)
        self.active.add(p)
        return p.muni, p.update(kind, today, at)

    def _correct_by_authority(self, p: _Person, today_ord: int) -> _Person:
        # Mostly a surname change on marriage (applied from the family register), to a
        # Japanese national aged 20-49, the wife in ~95 % of cases.
        rng = self.rng
        spouse = self._matching(
            lambda q: (
                q.nationality is None
                and 20 <= self._age(q, today_ord) < 50
                and (q.sex is Sex.FEMALE) == (rng.random() < 0.95)
            )
        )
        if spouse is not None and rng.random() < 0.85:
            name = _japanese_surname(rng, other_than=spouse.surname)
            spouse.surname, spouse.surname_kana = name.kanji, name.readings[0]
            return spouse
        # Otherwise the address is rewritten (e.g. a 住居表示 change renumbering it).
        p.address = self._new_address(p.address, self.munis[p.muni])
        return p

    def _correct_error(self, p: _Person, today_ord: int) -> None:
        # Switch to the other common reading where the name has one (a wrong 振り仮名),
        # else fix the birth date by a day.
        for kanji_attr, kana_attr in (("surname", "surname_kana"), ("given", "given_kana")):
            readings = _ALT_READINGS.get(getattr(p, kanji_attr))
            if readings:
                current = getattr(p, kana_attr)
                others = [r for r in readings if r != current]
                setattr(p, kana_attr, others[int(self.rng.random() * len(others))])
                return
        shift = 1 if self.rng.random() < 0.5 else -1
        if p.birth_ord + shift > today_ord:
            shift = -1
        self.active.remove(p)  # the birth year may change: re-file the person
        p.birth_ord += shift
        p.birth = dt.date.fromordinal(p.birth_ord)
        self.active.add(p)

    def _toggle_former_or_alias(self, p: _Person) -> None:
        rng = self.rng
        if p.nationality is None:
            if p.former is not None:
                p.former = None
            else:
                p.former = _japanese_surname(rng, other_than=p.surname).kanji
        elif p.alias is not None:
            p.alias = None
        else:
            p.alias = _alias(rng, p.sex, p.birth.year)
